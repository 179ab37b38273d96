"""The Trainer: one training run from a :class:`RunConfig`, with checkpoints, logs and plots.

Outputs in ``out_dir`` (rank 0 only): ``config.yaml``, ``log.jsonl`` (one line per epoch),
``tb/`` (TensorBoard), ``last.pt`` (every epoch), ``best.pt`` (best test top-1 so far),
``metrics.json`` and ``scores.npz`` (final test), ``curves.png``, ``confusion_matrix.png``; each
written atomically (temp file + rename, :mod:`deformact.engine.outputs`).

Exact resume: every source of randomness is either seeded from ``seed`` or saved in ``last.pt``
(python / numpy / torch / CUDA generators and the sampler's generator, per rank), so a run
killed at any moment and resumed from its last checkpoint computes what the uninterrupted run
computes, bit for bit on CPU.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DistributedSampler, RandomSampler, Sampler
from tqdm import tqdm

from deformact.engine import dist
from deformact.engine.builders import build_dataset, build_model_for, check_splits, make_loader, video_names
from deformact.engine.checkpoint import (
    get_rng_state,
    load_checkpoint,
    load_state,
    read_checkpoint,
    resume_changes,
    save_checkpoint,
    set_rng_state,
)
from deformact.engine.config import dump_config
from deformact.engine.evaluation import PUBLIC_METRICS, evaluate, write_test_outputs
from deformact.engine.optim import ModelEma, build_optimizer, build_scheduler
from deformact.engine.outputs import make_out_dir, remove_stale_temps, write_text
from deformact.engine.runtime import resolve_amp, seed_everything, set_determinism, show_progress
from deformact.engine.schema import RunConfig
from deformact.engine.step import train_step
from deformact.errors import CheckpointError, ConfigError, TrainingError
from deformact.io import jsonout


def _write_lines(path: Path, records: list[dict]) -> None:
    write_text(path, "".join(jsonout.dumps(r, what=str(path)) + "\n" for r in records), "log")


class Trainer:
    """One training run: datasets, model, optimizer, schedule, EMA, checkpoints and logs."""

    def __init__(self, cfg: Mapping[str, Any] | RunConfig, out_dir: str | Path, ctx: dist.DistContext,
                 echo: Callable[[str], None] = print) -> None:
        self.config = config = RunConfig.from_dict(cfg)
        self.out = Path(out_dir)
        self.ctx = ctx
        self.echo = echo if ctx.is_main else (lambda _msg: None)
        t, dev = config.train, ctx.device
        set_determinism(t.deterministic, dev)
        seed_everything(config.seed)
        self.amp = resolve_amp(t.amp, dev)
        if t.amp in (True, "auto") and self.amp is None:
            self.echo("train.amp=true: this CPU has no native bf16 (AVX512-BF16/AMX), so training runs in fp32 "
                      "(set train.amp=bf16 to force it)")
        self.train_set = build_dataset(config.data, "train", train=True)
        self.eval_set = build_dataset(config.data, "test", train=False, num_clips=t.eval_clips)
        if len(self.train_set) == 0 or len(self.eval_set) == 0:
            raise ConfigError(f"empty split: {len(self.train_set)} train / {len(self.eval_set)} test samples")
        check_splits(self.train_set, self.eval_set)
        self.class_names = [str(c) for c in self.train_set.class_names]
        self.num_classes = int(self.train_set.num_classes)
        self.model = build_model_for(config.model, self.train_set).to(dev)
        model_dict = self.model.config.to_dict()
        model_dict["backbone_weights"] = None  # the weights travel in the checkpoint itself
        # what checkpoints store: the run config with the model section spelled out in full
        self.run_config = {**config.to_dict(), "model": model_dict}
        self.optimizer = build_optimizer(self.model, t.to_dict())
        self.ema = ModelEma(self.model, float(t.ema)) if t.ema else None
        # the sampler's generator: seeded here, saved in last.pt, so shuffles resume exactly
        self.generator = torch.Generator().manual_seed(config.seed)
        if ctx.distributed:
            self.sampler: Sampler = DistributedSampler(self.train_set, ctx.world_size, ctx.rank, shuffle=True,
                                                       seed=config.seed, drop_last=True)
        else:
            self.sampler = RandomSampler(self.train_set, generator=self.generator)
        self.train_loader = make_loader(self.train_set, t.batch_size, self.sampler, t.num_workers, dev,
                                        drop_last=len(self.sampler) >= t.batch_size, generator=self.generator)
        self.steps_per_epoch = len(self.train_loader)
        self.scheduler = build_scheduler(self.optimizer, t.to_dict(), config.epochs, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.net: nn.Module = self.model
        if ctx.distributed:  # same init on every rank (DDP broadcasts rank 0's anyway)
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[dev] if dev.type == "cuda" else None)
        self.epoch = 0  # completed epochs
        self.saved_epoch = 0  # the epoch last.pt holds
        self.step = 0
        self.history: list[dict] = []
        self.best: dict | None = None
        self.bars = ctx.is_main and show_progress()
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
        # a changed lr, seed, ... is an error; a changed epochs or batch size a note (docs/FAILURES.md)
        epochs_change, applied = resume_changes(path, ckpt.get("config"), self.run_config)
        load_state(self.model, ckpt["model"], path)
        if self.ema is not None and ckpt.get("ema"):
            load_state(self.ema.module, ckpt["ema"], path, "EMA")
        elif self.ema is not None:  # the run had no EMA: start it from the resumed weights, not the init
            self.ema.load_state_dict(self.model.state_dict())
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.scaler.load_state_dict(ckpt["scaler"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{path}: optimizer state does not fit this config: {e}") from None
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        self.saved_epoch = self.epoch
        self.history, self.best = list(ckpt.get("history", [])), ckpt.get("best")
        rng = ckpt["rng"]
        if len(rng) == self.ctx.world_size:
            set_rng_state(rng[self.ctx.rank], self.generator)
        else:  # different world size: the run goes on from rank 0's streams, not bit-identically
            self.note(f"note: {path} was written by {len(rng)} process(es), now {self.ctx.world_size}; "
                      "the resumed run will not repeat the original one exactly")
            set_rng_state(rng[0], self.generator)
        if epochs_change or applied:
            self.replan(path, epochs_change, applied)

    def note(self, msg: str) -> None:
        """One line on stderr (rank 0): something the user should know that is not an error."""
        if self.ctx.is_main:
            print(msg, file=sys.stderr, flush=True)

    def replan(self, path: Path, epochs_change: str | None, applied: list[str]) -> None:
        """After a resume with changed settings. The schedule's lambdas are not saved in last.pt but
        built from the config, so the warm-up + cosine schedule follows the new epochs, batch size,
        warm-up and min_lr from the resumed step on: the lr is set to the new plan's at once, and
        the notes say what it was and what it is now."""
        sched, groups = self.scheduler, self.optimizer.param_groups
        before = groups[0]["lr"]
        for group, base, lam in zip(groups, sched.base_lrs, sched.lr_lambdas):
            group["lr"] = base * lam(sched.last_epoch)
        after, epochs = groups[0]["lr"], self.config.epochs
        if self.epoch >= epochs:
            plan = f"{path} already holds {self.epoch} epochs, so none is trained"
        else:
            plan = (f"the LR schedule (warm-up + cosine) is re-planned over {epochs} epochs from step {self.step} "
                    f"on: lr {before:.3g} -> {after:.3g}")
        if epochs_change:
            self.note(f"note: resuming with {epochs_change}; {plan}")
        if applied:
            replanned = "" if epochs_change or after == before else f"; {plan}"
            self.note(f"note: resuming with changed settings: {', '.join(applied)}; the run goes on with them, "
                      f"so it will not repeat the checkpoint's run exactly{replanned}")

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
        ctx, dev, t = self.ctx, self.ctx.device, self.config.train
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(self.epoch)
        if hasattr(self.train_loader.dataset, "set_epoch"):  # a generated set's fresh clips (data.regenerate_every)
            self.train_loader.dataset.set_epoch(self.epoch)
        self.net.train()
        # Seed this process per epoch from the sampler's generator, as DataLoader seeds its workers:
        # augmentation that follows torch.initial_seed() (the convention, and deformact.data's) then
        # repeats exactly after a resume with num_workers=0 as well.
        epoch_seed = int(torch.randint(0, 2**31 - 1, (), generator=self.generator))
        seed_everything(epoch_seed + ctx.rank)
        totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, seen
        step_stats: list[torch.Tensor] = []

        def gather(loss: torch.Tensor, logits: torch.Tensor, label: torch.Tensor) -> None:
            # one small all-reduce per step: every rank sees a non-finite loss and stops together
            stats = torch.stack([loss.double() * label.shape[0], (logits.argmax(-1) == label).sum().double(),
                                 torch.tensor(float(label.shape[0]), dtype=torch.float64, device=dev)])
            stats = dist.all_reduce_sum(ctx, stats.to(dev)).cpu()
            if not math.isfinite(stats[0].item()):
                self.diverged(stats[0].item())
            step_stats.append(stats)

        bar = tqdm(self.train_loader, desc=f"epoch {self.epoch + 1}/{self.config.epochs}", unit="batch",
                   leave=False, dynamic_ncols=True, disable=not self.bars)
        for batch in bar:
            train_step(self.net, batch, self.optimizer, device=dev, amp_dtype=self.amp, scaler=self.scaler,
                       label_smoothing=t.label_smoothing, clip_grad=t.clip_grad, before_backward=gather)
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.model)
            self.step += 1
            stats = step_stats.pop()
            totals += stats
            if self.writer is not None and self.step % t.log_every == 0:
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
        config, t = self.config, self.config.train
        last = self.out / "last.pt"
        if self.ctx.is_main:
            make_out_dir(self.out)
            remove_stale_temps(self.out)
        dist.barrier(self.ctx)
        if resume and last.is_file():
            self.resume(last)
            self.echo(f"resumed from {last} at epoch {self.epoch}, step {self.step}")
        elif resume:
            self.echo(f"no {last} yet: starting from scratch")
        if self.ctx.is_main:
            write_text(self.out / "config.yaml", dump_config(config), "config")
            _write_lines(self.out / "log.jsonl", self.history)
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tb"), purge_step=self.step + 1 if self.step else None)
        try:
            while self.epoch < config.epochs:
                tic = time.perf_counter()
                skipped = self.skipped()
                record = {"epoch": self.epoch + 1, **self.train_epoch()}
                self.epoch += 1
                record.update(step=self.step, lr=self.optimizer.param_groups[0]["lr"],
                              time_s=round(time.perf_counter() - tic, 3))
                skipped = self.skipped() - skipped
                if skipped:  # data.skip_bad: unreadable samples replaced this epoch (counted, not hidden)
                    record["skipped_samples"] = skipped
                if self.epoch == config.epochs or (t.eval_every and self.epoch % t.eval_every == 0):
                    m = evaluate(self.eval_model(), self.eval_set, self.ctx, batch_size=self.test_batch(),
                                 num_clips=t.eval_clips, num_workers=t.num_workers, amp=self.amp,
                                 average=config.test.average, desc="eval")
                    record.update({f"test_{k}": m[k] for k in PUBLIC_METRICS})
                    if self.best is None or m["top1"] > self.best["top1"]:
                        self.best = {"epoch": self.epoch, **{k: m[k] for k in PUBLIC_METRICS}}
                        self.save(self.out / "best.pt", self.best_state(m))
                self.history.append(record)
                state = self.state()  # collective (gathers every rank's RNG state)
                if self.ctx.is_main:
                    _write_lines(self.out / "log.jsonl", self.history)
                    save_checkpoint(state, last)
                self.saved_epoch = self.epoch
                if self.ctx.is_main:
                    self.log_epoch(record)
        except BaseException:  # also after a divergence or a stop: curves of the epochs that finished,
            with contextlib.suppress(Exception):  # unless the disk is what failed (the first error wins)
                self.close_logs()
            raise
        self.close_logs()
        dist.barrier(self.ctx)

    def close_logs(self) -> None:
        """Close TensorBoard and plot the curves of the finished epochs (rank 0)."""
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.close()
        if self.ctx.is_main and self.history:
            from deformact.engine.plots import plot_curves

            plot_curves(self.history, self.out / "curves.png")

    def skipped(self) -> int:
        """Bad training samples replaced so far on all ranks (datasets built with ``skip_bad``)."""
        count = torch.tensor([int(getattr(self.train_set, "num_skipped", 0) or 0)], device=self.ctx.device)
        return int(dist.all_reduce_sum(self.ctx, count).item())

    def test_batch(self) -> int:
        return self.config.test.batch_size or self.config.train.batch_size

    def log_epoch(self, r: dict) -> None:
        msg = (f"epoch {r['epoch']}/{self.config.epochs}  loss {r['train_loss']:.4f}  "
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
        config = self.config
        clips = config.data.num_clips
        model, which = self.eval_model(), config.test.checkpoint
        if which == "best" and (self.out / "best.pt").is_file():
            model = load_checkpoint(self.out / "best.pt", map_location=self.ctx.device)
        dataset = self.eval_set if clips == config.train.eval_clips else build_dataset(
            config.data, "test", train=False, num_clips=clips)
        m = evaluate(model, dataset, self.ctx, batch_size=self.test_batch(), num_clips=clips,
                     num_workers=config.train.num_workers, amp=self.amp, average=config.test.average)
        return write_test_outputs(m, self.out, self.class_names, self.ctx,
                                  extra={"checkpoint": which, "epoch": self.epoch}, echo=self.echo,
                                  names=video_names(dataset, config.data.test_split),
                                  split=config.data.test_split, average=config.test.average)
