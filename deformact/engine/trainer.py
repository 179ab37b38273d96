"""Training and evaluation loops: ``run(cfg, out_dir)`` trains, tests and writes everything.

Outputs in ``out_dir`` (rank 0 only): ``config.yaml``, ``log.jsonl`` (one line per epoch),
``tb/`` (TensorBoard), ``last.pt`` (every epoch), ``best.pt`` (best test top-1 so far),
``metrics.json`` (final test), ``curves.png``, ``confusion_matrix.png``.

Exact resume: every source of randomness is either seeded from ``seed`` or saved in ``last.pt``
(python / numpy / torch / CUDA generators and the sampler's generator, per rank), so a run
killed at any moment and resumed from its last checkpoint computes what the uninterrupted run
computes, bit for bit on CPU.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler
from tqdm import tqdm

from deformact.engine import dist
from deformact.engine.checkpoint import (
    CheckpointError,
    get_rng_state,
    load_checkpoint,
    load_state,
    read_checkpoint,
    remove_stale_temps,
    save_checkpoint,
    set_rng_state,
)
from deformact.engine.config import ConfigError, dump_config, validate_config
from deformact.engine.metrics import Results, merge, summarize
from deformact.engine.optim import ModelEma, build_optimizer, build_scheduler

INPUT_KEYS = ("rgb", "pose", "person_mask")


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, labels out of range); the message says why."""


# --- setup helpers --------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_determinism(on: bool, device: torch.device) -> None:
    """Deterministic kernels on GPU (exact resume); cuDNN autotuning when off.

    The CPU kernels deformact uses are deterministic for a fixed thread count already, so on CPU
    nothing is switched (``torch.use_deterministic_algorithms`` also costs seconds of imports).
    """
    if device.type != "cuda":
        return
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # warn_only: ops without a deterministic CUDA kernel (e.g. grid_sample backward) still run
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = not on


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN finds native bf16 instructions on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_amp(amp: Any, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``train.amp`` (None = full precision)."""
    if amp in (False, None, "none"):
        return None
    if amp in (True, "auto"):
        if device.type != "cuda":
            # without native bf16 (AVX512-BF16 / AMX) CPU bf16 kernels are emulated: measured 12x
            # slower than fp32 on an AVX2 EPYC (docs/PERFORMANCE.md), so "auto" stays in fp32 there
            return torch.bfloat16 if cpu_has_fast_bf16() else None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp=fp16 needs a GPU (GradScaler); use train.amp=bf16 on CPU")
    return torch.float16 if amp == "fp16" else torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` context for ``dtype`` (a no-op when None)."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def build_dataset(data_cfg: Mapping[str, Any], split: str, train: bool, num_clips: int = 1):
    """``deformact.data.build_dataset`` for the train or test split of a config's ``data`` section."""
    import deformact.data as dd

    kwargs = dict(data_cfg)
    names = {"train": kwargs.pop("train_split", "train"), "test": kwargs.pop("test_split", "test")}
    kwargs["split"] = names[split]
    kwargs.update(train=train, num_clips=num_clips)
    try:
        return dd.build_dataset(**kwargs)
    except TypeError as e:  # unknown keyword in the data section
        raise ConfigError(f"data: {e}") from None


def infer_shapes(dataset) -> dict[str, Any]:
    """ModelConfig fields the data decides: classes, modality, frames, size, persons, joints."""
    item = dataset[0]
    shapes: dict[str, Any] = {"num_classes": int(dataset.num_classes)}
    if "pose" in item:
        m, t, v, c = item["pose"].shape[-4:]
        shapes.update(num_persons=int(m), frames=int(t), num_joints=int(v), pose_channels=int(c))
    if "rgb" in item:
        _, t, h, _ = item["rgb"].shape[-4:]
        shapes.update(frames=int(t), image_size=int(h))
    shapes["modality"] = "+".join(k for k in ("rgb", "pose") if k in item)
    return shapes


def build_model_for(model_cfg: Mapping[str, Any], dataset) -> nn.Module:
    """The model of a config's ``model`` section, with the shapes the data dictates filled in."""
    from deformact.models import build_model

    user = dict(model_cfg)
    preset = user.pop("preset", "demo")
    inferred = infer_shapes(dataset)
    for key, value in inferred.items():
        if key in user and user[key] != value:
            raise ConfigError(f"model.{key}={user[key]!r} does not match the data ({value!r}); "
                              f"leave model.{key} out to take it from the data")
    try:
        return build_model(preset=preset, **{**inferred, **user})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model: {e}") from None


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: each evaluation sample is seen exactly once overall."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _seed_worker(worker_id: int) -> None:
    # torch seeds python/torch/numpy per worker from the loader generator; make numpy's explicit too
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(dataset, batch_size: int, sampler: Sampler, num_workers: int, device: torch.device,
                drop_last: bool = False, generator: torch.Generator | None = None) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      pin_memory=device.type == "cuda", drop_last=drop_last, generator=generator,
                      worker_init_fn=_seed_worker if num_workers else None)


def model_inputs(batch: Mapping[str, torch.Tensor], device: torch.device, clips: bool = False) -> dict:
    """Model keyword arguments from a batch; multi-clip batches (B x N x ...) become (B*N) x ..."""
    out = {}
    for key in INPUT_KEYS:
        if key in batch:
            x = batch[key].to(device, non_blocking=True)
            out[key] = x.flatten(0, 1) if clips else x
    return out


def check_labels(label: torch.Tensor, num_classes: int) -> None:
    if label.numel() and (int(label.min()) < 0 or int(label.max()) >= num_classes):
        bad = label[(label < 0) | (label >= num_classes)][0].item()
        raise TrainingError(f"label {bad} is out of range for {num_classes} classes (check data.label_map)")


def _bars() -> bool:
    return sys.stderr.isatty()


# --- evaluation -----------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: nn.Module, dataset, ctx: dist.DistContext | None = None, *, batch_size: int = 16,
             num_clips: int = 1, num_workers: int = 0, amp: torch.dtype | None = None,
             average: str = "prob", desc: str = "test") -> dict:
    """Top-1, top-5, mean class accuracy, loss and confusion over ``dataset``.

    With ``num_clips > 1`` each item holds N clips; their softmax (``average="prob"``) or logits
    (``"score"``) are averaged per video. Under torchrun every rank evaluates its shard and the
    per-sample results are gathered, so all ranks return the single-process numbers.
    """
    ctx = ctx or dist.DistContext(device=next(model.parameters()).device)
    sampler = ShardSampler(len(dataset), ctx.rank, ctx.world_size)
    loader = make_loader(dataset, batch_size, sampler, num_workers, ctx.device)
    was_training = model.training
    model.eval()
    num_classes = int(dataset.num_classes)
    res, order, pos = Results(), sampler.indices, 0
    bar = tqdm(loader, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
               disable=not (_bars() and ctx.is_main))
    for batch in bar:
        label = batch["label"].to(ctx.device).long()
        check_labels(label, num_classes)
        b = label.shape[0]
        with autocast(ctx.device, amp):
            logits = model(**model_inputs(batch, ctx.device, clips=num_clips > 1)).float()
        logits = logits.view(b, -1, logits.shape[-1])
        scores = logits.softmax(-1).mean(1) if average == "prob" else logits.mean(1)
        res.add(torch.as_tensor(order[pos:pos + b]), label, scores, average)
        pos += b
    model.train(was_training)
    merged = merge(dist.all_gather_objects(ctx, res.arrays()))
    out = summarize(merged, num_classes)
    out["num_clips"] = num_clips
    return out


# --- training -------------------------------------------------------------------------------------


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def _write_lines(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    os.replace(tmp, path)


PUBLIC_METRICS = ("top1", "top5", "mean_class_acc", "loss")


class Trainer:
    """One training run: datasets, model, optimizer, schedule, EMA, checkpoints and logs."""

    def __init__(self, cfg: Mapping[str, Any], out_dir: str | Path, ctx: dist.DistContext,
                 echo: Callable[[str], None] = print) -> None:
        self.cfg = validate_config(cfg)
        self.out = Path(out_dir)
        self.ctx = ctx
        self.echo = echo if ctx.is_main else (lambda _msg: None)
        t = self.cfg["train"]
        dev = ctx.device
        set_determinism(t["deterministic"], dev)
        seed_everything(self.cfg["seed"])
        self.amp = resolve_amp(t["amp"], dev)
        if t["amp"] in (True, "auto") and self.amp is None:
            self.echo("train.amp=true: this CPU has no native bf16 (AVX512-BF16/AMX), so training runs in fp32 "
                      "(set train.amp=bf16 to force it)")
        self.train_set = build_dataset(self.cfg["data"], "train", train=True)
        self.eval_set = build_dataset(self.cfg["data"], "test", train=False, num_clips=t["eval_clips"])
        if len(self.train_set) == 0 or len(self.eval_set) == 0:
            raise ConfigError(f"empty split: {len(self.train_set)} train / {len(self.eval_set)} test samples")
        self.class_names = [str(c) for c in self.train_set.class_names]
        self.num_classes = int(self.train_set.num_classes)
        self.model = build_model_for(self.cfg["model"], self.train_set).to(dev)
        model_dict = self.model.config.to_dict()
        model_dict["backbone_weights"] = None  # the weights travel in the checkpoint itself
        self.run_config = {**self.cfg, "model": model_dict}
        self.optimizer = build_optimizer(self.model, t)
        self.ema = ModelEma(self.model, float(t["ema"])) if t["ema"] else None
        # the sampler's generator: seeded here, saved in last.pt, so shuffles resume exactly
        self.generator = torch.Generator().manual_seed(self.cfg["seed"])
        if ctx.distributed:
            self.sampler: Sampler = DistributedSampler(self.train_set, ctx.world_size, ctx.rank, shuffle=True,
                                                       seed=self.cfg["seed"], drop_last=True)
        else:
            self.sampler = RandomSampler(self.train_set, generator=self.generator)
        bs = t["batch_size"]
        self.train_loader = make_loader(self.train_set, bs, self.sampler, t["num_workers"], dev,
                                        drop_last=len(self.sampler) >= bs, generator=self.generator)
        self.steps_per_epoch = len(self.train_loader)
        self.scheduler = build_scheduler(self.optimizer, t, self.cfg["epochs"], self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=float(t["label_smoothing"]))
        self.net: nn.Module = self.model
        if ctx.distributed:  # same init on every rank (DDP broadcasts rank 0's anyway)
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[dev] if dev.type == "cuda" else None)
        self.epoch = 0  # completed epochs
        self.step = 0
        self.history: list[dict] = []
        self.best: dict | None = None
        self.bars = ctx.is_main and _bars()
        self.writer = None

    # -- checkpoints --

    def state(self) -> dict:
        """Everything ``last.pt`` needs for an exact resume (collective: every rank calls it)."""
        rng = dist.all_gather_objects(self.ctx, get_rng_state(self.generator))
        return {
            "model": self.model.state_dict(),
            "config": self.run_config,
            "class_names": self.class_names,
            "epoch": self.epoch,
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "rng": rng,
            "world_size": self.ctx.world_size,
            "history": self.history,
            "best": self.best,
        }

    def resume(self, path: Path) -> None:
        """Restore the state saved by :meth:`state`."""
        ckpt = read_checkpoint(path, map_location=self.ctx.device)
        for key in ("optimizer", "scheduler", "scaler", "rng", "epoch", "step"):
            if key not in ckpt:
                raise CheckpointError(f"{path}: has no {key!r}; only a last.pt can be resumed")
        load_state(self.model, ckpt["model"], path)
        if self.ema is not None and ckpt.get("ema"):
            load_state(self.ema.module, ckpt["ema"], path, "EMA")
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.scaler.load_state_dict(ckpt["scaler"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{path}: optimizer state does not fit this config: {e}") from None
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        self.history, self.best = list(ckpt.get("history", [])), ckpt.get("best")
        rng = ckpt["rng"]
        if len(rng) == self.ctx.world_size:
            set_rng_state(rng[self.ctx.rank], self.generator)
        else:  # different world size: the run goes on from rank 0's streams, not bit-identically
            self.echo(f"note: {path} was written by {len(rng)} process(es), now {self.ctx.world_size}; "
                      "the resumed run will not repeat the original one exactly")
            set_rng_state(rng[0], self.generator)

    def save(self, path: Path, state: dict) -> None:
        if self.ctx.is_main:
            save_checkpoint(state, path)

    def best_state(self, metrics: dict) -> dict:
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
                "config": self.run_config, "class_names": self.class_names, "epoch": self.epoch,
                "step": self.step, "metrics": {k: metrics[k] for k in PUBLIC_METRICS}}

    # -- loops --

    def train_epoch(self) -> dict:
        """One pass over the training split; returns mean loss and top-1 over all ranks."""
        ctx, dev, t = self.ctx, self.ctx.device, self.cfg["train"]
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(self.epoch)
        self.net.train()
        # Seed this process per epoch from the sampler's generator, as DataLoader seeds its workers:
        # augmentation that follows torch.initial_seed() (the convention, and deformact.data's) then
        # repeats exactly after a resume with num_workers=0 as well.
        epoch_seed = int(torch.randint(0, 2**31 - 1, (), generator=self.generator))
        seed_everything(epoch_seed + ctx.rank)
        totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, seen
        bar = tqdm(self.train_loader, desc=f"epoch {self.epoch + 1}/{self.cfg['epochs']}", unit="batch",
                   leave=False, dynamic_ncols=True, disable=not self.bars)
        for batch in bar:
            label = batch["label"].to(dev, non_blocking=True).long()
            check_labels(label, self.num_classes)
            with autocast(dev, self.amp):
                logits = self.net(**model_inputs(batch, dev))
            loss = self.criterion(logits.float(), label)
            # one small all-reduce per step: every rank sees a non-finite loss and stops together
            stats = torch.stack([loss.detach().double() * label.shape[0],
                                 (logits.argmax(-1) == label).sum().double(),
                                 torch.tensor(float(label.shape[0]), dtype=torch.float64, device=dev)])
            stats = dist.all_reduce_sum(ctx, stats.to(dev)).cpu()
            if not math.isfinite(stats[0].item()):
                self.diverged(stats[0].item())
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if t["clip_grad"]:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), float(t["clip_grad"]))
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.model)
            self.step += 1
            totals += stats
            if self.writer is not None and self.step % t["log_every"] == 0:
                self.writer.add_scalar("train/loss", stats[0].item() / stats[2].item(), self.step)
                self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.step)
            if self.bars:
                bar.set_postfix(loss=f"{totals[0].item() / totals[2].item():.3f}",
                                lr=f"{self.optimizer.param_groups[0]['lr']:.2e}", refresh=False)
        dist.broadcast_buffers(self.ctx, self.model)
        if self.ema is not None:
            dist.broadcast_buffers(self.ctx, self.ema.module)
        seen = max(totals[2].item(), 1.0)
        return {"train_loss": totals[0].item() / seen, "train_top1": totals[1].item() / seen}

    def diverged(self, value: float) -> None:
        """Stop on a non-finite loss; what is on disk (last.pt, log.jsonl) stays the last good state."""
        lr = self.optimizer.param_groups[0]["lr"]
        where = (f"{self.out / 'last.pt'} keeps epoch {self.epoch}, the last good state" if self.epoch
                 else "no epoch had finished, so there is no checkpoint")
        raise TrainingError(
            f"loss became {value} at epoch {self.epoch + 1}, step {self.step + 1} (lr {lr:.3g}); training "
            f"stopped; {where}. Try a lower train.lr, train.clip_grad=1.0 or train.amp=false")

    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def fit(self, resume: bool = False) -> None:
        """Train ``epochs`` epochs (continuing from ``last.pt`` when ``resume``)."""
        cfg, t = self.cfg, self.cfg["train"]
        last = self.out / "last.pt"
        if self.ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.out)
        dist.barrier(self.ctx)
        if resume and last.is_file():
            self.resume(last)
            self.echo(f"resumed from {last} at epoch {self.epoch}, step {self.step}")
        elif resume:
            self.echo(f"no {last} yet: starting from scratch")
        if self.ctx.is_main:
            (self.out / "config.yaml").write_text(dump_config(cfg))
            _write_lines(self.out / "log.jsonl", self.history)
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tb"), purge_step=self.step + 1 if self.step else None)
        try:
            while self.epoch < cfg["epochs"]:
                tic = time.perf_counter()
                skipped = self.skipped()
                record = {"epoch": self.epoch + 1, **self.train_epoch()}
                self.epoch += 1
                record.update(step=self.step, lr=self.optimizer.param_groups[0]["lr"],
                              time_s=round(time.perf_counter() - tic, 3))
                skipped = self.skipped() - skipped
                if skipped:  # data.skip_bad: unreadable samples replaced this epoch (counted, not hidden)
                    record["skipped_samples"] = skipped
                if self.epoch == cfg["epochs"] or (t["eval_every"] and self.epoch % t["eval_every"] == 0):
                    m = evaluate(self.eval_model(), self.eval_set, self.ctx, batch_size=self.test_batch(),
                                 num_clips=t["eval_clips"], num_workers=t["num_workers"], amp=self.amp,
                                 average=cfg["test"]["average"], desc="eval")
                    record.update({f"test_{k}": m[k] for k in PUBLIC_METRICS})
                    if self.best is None or m["top1"] > self.best["top1"]:
                        self.best = {"epoch": self.epoch, **{k: m[k] for k in PUBLIC_METRICS}}
                        self.save(self.out / "best.pt", self.best_state(m))
                self.history.append(record)
                state = self.state()  # collective (gathers every rank's RNG state)
                if self.ctx.is_main:
                    _write_lines(self.out / "log.jsonl", self.history)
                    save_checkpoint(state, last)
                    self.log_epoch(record)
        finally:  # also after a divergence: curves of the epochs that finished
            if self.writer is not None:
                self.writer.close()
            if self.ctx.is_main and self.history:
                from deformact.engine.plots import plot_curves

                plot_curves(self.history, self.out / "curves.png")
        dist.barrier(self.ctx)

    def skipped(self) -> int:
        """Bad training samples replaced so far on all ranks (datasets built with ``skip_bad``)."""
        count = torch.tensor([int(getattr(self.train_set, "num_skipped", 0) or 0)], device=self.ctx.device)
        return int(dist.all_reduce_sum(self.ctx, count).item())

    def test_batch(self) -> int:
        return self.cfg["test"]["batch_size"] or self.cfg["train"]["batch_size"]

    def log_epoch(self, r: dict) -> None:
        msg = (f"epoch {r['epoch']}/{self.cfg['epochs']}  loss {r['train_loss']:.4f}  "
               f"train top-1 {r['train_top1']:.3f}")
        if "test_top1" in r:
            msg += f"  test top-1 {r['test_top1']:.3f}  top-5 {r['test_top5']:.3f}  loss {r['test_loss']:.4f}"
        if r.get("skipped_samples"):
            msg += f"  ({r['skipped_samples']} bad samples skipped)"
        self.echo(msg + f"  lr {r['lr']:.2e}  {r['time_s']:.1f}s")
        w = self.writer
        for key in ("train_loss", "train_top1", "test_loss", "test_top1", "test_top5", "test_mean_class_acc"):
            if key in r:
                w.add_scalar(key.replace("_", "/", 1), r[key], self.step)
        w.add_scalar("train/lr_epoch", r["lr"], self.step)
        w.flush()

    def final_test(self) -> dict:
        """Test the last (or best) weights with ``data.num_clips`` clips; write metrics and plots."""
        cfg = self.cfg
        clips = int(cfg["data"].get("num_clips", 1) or 1)
        model, which = self.eval_model(), cfg["test"]["checkpoint"]
        if which == "best" and (self.out / "best.pt").is_file():
            model = load_checkpoint(self.out / "best.pt", map_location=self.ctx.device)
        dataset = self.eval_set if clips == cfg["train"]["eval_clips"] else build_dataset(
            cfg["data"], "test", train=False, num_clips=clips)
        m = evaluate(model, dataset, self.ctx, batch_size=self.test_batch(), num_clips=clips,
                     num_workers=cfg["train"]["num_workers"], amp=self.amp, average=cfg["test"]["average"])
        return write_test_outputs(m, self.out, self.class_names, self.ctx,
                                  extra={"checkpoint": which, "epoch": self.epoch}, echo=self.echo)


def write_test_outputs(m: dict, out: Path, class_names: list[str], ctx: dist.DistContext,
                       extra: Mapping[str, Any] | None = None, echo: Callable[[str], None] = print) -> dict:
    """``metrics.json`` and ``confusion_matrix.png`` (rank 0); returns the metrics dict."""
    metrics = {**{k: m[k] for k in PUBLIC_METRICS}, "num_samples": m["num_samples"],
               "num_clips": m["num_clips"], **(extra or {})}
    if ctx.is_main:
        from deformact.engine.plots import plot_confusion

        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "metrics.json", metrics)
        plot_confusion(m["confusion"], class_names, out / "confusion_matrix.png",
                       title=f"top-1 {m['top1']:.3f} ({m['num_samples']} videos, {m['num_clips']} clip(s))")
        echo(f"test: top-1 {m['top1']:.4f}  top-5 {m['top5']:.4f}  mean class acc {m['mean_class_acc']:.4f}  "
             f"loss {m['loss']:.4f}  ({m['num_samples']} videos x {m['num_clips']} clip(s))")
    return metrics


# --- entry points ---------------------------------------------------------------------------------


def run(cfg: Mapping[str, Any], out_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
        echo: Callable[[str], None] = print) -> dict:
    """Train and test from a config dict in-process; returns the final test metrics.

    ``resume`` continues from ``out_dir/last.pt``; otherwise an existing run in ``out_dir`` is an
    error unless ``overwrite``. Works under torchrun (every rank calls it; rank 0 writes).
    """
    cfg = validate_config(cfg)
    out = Path(out_dir)
    if not resume and not overwrite and (out / "last.pt").exists():
        raise ConfigError(f"{out} already holds a run (last.pt); pass --resume to continue it "
                          "or choose another --out")
    ctx = dist.setup(cfg["train"]["device"])
    try:
        trainer = Trainer(cfg, out, ctx, echo=echo)
        if overwrite and not resume and ctx.is_main:
            for name in ("last.pt", "best.pt", "metrics.json", "log.jsonl"):
                (out / name).unlink(missing_ok=True)
        trainer.fit(resume=resume)
        return trainer.final_test()
    finally:
        dist.teardown(ctx)


def test(cfg: Mapping[str, Any], ckpt: str | Path, out_dir: str | Path, *, num_clips: int | None = None,
         echo: Callable[[str], None] = print) -> dict:
    """Evaluate a checkpoint on the config's test split with multi-clip averaging; returns metrics."""
    cfg = validate_config(cfg)
    ctx = dist.setup(cfg["train"]["device"])
    try:
        set_determinism(cfg["train"]["deterministic"], ctx.device)
        model = load_checkpoint(ckpt, map_location=ctx.device)
        clips = int(num_clips or cfg["data"].get("num_clips", 1) or 1)
        dataset = build_dataset(cfg["data"], "test", train=False, num_clips=clips)
        if int(dataset.num_classes) != len(model.class_names):
            raise ConfigError(f"{ckpt} predicts {len(model.class_names)} classes but the test split has "
                              f"{dataset.num_classes}")
        m = evaluate(model, dataset, ctx, batch_size=cfg["test"]["batch_size"] or cfg["train"]["batch_size"],
                     num_clips=clips, num_workers=cfg["train"]["num_workers"],
                     amp=resolve_amp(cfg["train"]["amp"], ctx.device), average=cfg["test"]["average"])
        return write_test_outputs(m, Path(out_dir), model.class_names, ctx,
                                  extra={"checkpoint": str(ckpt)}, echo=echo)
    finally:
        dist.teardown(ctx)
