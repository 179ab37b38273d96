"""Entry points: ``run`` trains and tests from a config, ``test`` evaluates a checkpoint. Both work
in-process and under torchrun (every rank calls them; rank 0 writes).

Both check and lock the output folder before building anything, and stop on SIGINT / SIGTERM with
one :class:`~deformact.engine.guard.RunInterrupted` line (docs/FAILURES.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from deformact.engine import dist
from deformact.engine.builders import build_dataset, check_backbone_weights, infer_shapes, video_names
from deformact.engine.checkpoint import check_fits, load_checkpoint, read_checkpoint
from deformact.engine.evaluation import evaluate, write_test_outputs
from deformact.engine.guard import RunInterrupted, StopSignal, guarded_out_dir
from deformact.engine.outputs import check_run_outputs, claim_run_outputs, run_inputs
from deformact.engine.runtime import resolve_amp, set_determinism
from deformact.engine.schema import RunConfig
from deformact.engine.trainer import Trainer
from deformact.errors import CheckpointError, ConfigError
from deformact.io.atomic import Input

# what run() writes into its folder (rank 0); all of them exist after a run that returned
RUN_OUTPUTS = ("metrics.json", "scores.npz", "log.jsonl", "last.pt", "best.pt", "curves.png",
               "confusion_matrix.png", "config.yaml", "tb/")
# what test() writes into its folder (rank 0)
TEST_OUTPUTS = ("metrics.json", "scores.npz", "confusion_matrix.png")


def _interrupted(stop: StopSignal, out: Path, trainer: Trainer | None) -> RunInterrupted:
    """The one line a stopped run ends with: where it stopped and what ``last.pt`` holds."""
    last = out / "last.pt"
    if trainer is None:
        kept = f"{last} is unchanged; continue with --resume" if last.is_file() else "nothing was saved"
        return RunInterrupted(f"stopped by {stop.name} before training started; {kept}", stop.signum)
    saved, epochs = trainer.saved_epoch, trainer.config.epochs
    if trainer.epoch > saved and last.is_file():
        # the stop can land between last.pt's rename and the trainer noting it: the file decides
        # whether the finished epoch was saved (an older run's last.pt holds another epoch)
        try:
            if int(read_checkpoint(last)["epoch"]) == trainer.epoch:
                saved = trainer.epoch
        except (CheckpointError, KeyError, TypeError, ValueError):
            pass
    if saved >= epochs:
        where = f"during the final test; {last} holds all {epochs} epochs; --resume runs the final test again"
    elif saved:
        where = (f"in epoch {saved + 1}/{epochs}; {last} keeps epoch {saved}, the last finished one; "
                 "continue with --resume")
    else:
        where = f"in epoch 1/{epochs}, before any checkpoint was saved; nothing to resume, start again"
    return RunInterrupted(f"stopped by {stop.name} {where}", stop.signum)


def run(cfg: Mapping[str, Any] | RunConfig, out_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
        echo: Callable[[str], None] = print, inputs: Iterable[Input] = ()) -> dict:
    """Train and test from a config in-process; returns the final test metrics.

    ``resume`` continues from ``out_dir/last.pt``; otherwise an existing run in ``out_dir`` is an
    error unless ``overwrite``. ``out_dir`` is locked while the run lasts. No output may overwrite
    the config's input files or ``inputs`` (e.g. the config file), nor a file no run wrote there.
    """
    config = RunConfig.from_dict(cfg)
    out = Path(out_dir)
    ctx = dist.setup(config.train.device)
    clean = False
    try:
        with guarded_out_dir(out, ctx, "train", echo=echo if ctx.is_main else lambda _m: None):
            if not resume and not overwrite and (out / "last.pt").exists():
                raise ConfigError(f"{out} already holds a run (last.pt); pass --resume to continue it "
                                  "or choose another --out")
            # a resumed run rewrites its own config.yaml (docs/FAILURES.md, "Which files an output may replace")
            check_run_outputs(out, RUN_OUTPUTS, run_inputs(config, inputs), ctx,
                              own=("config.yaml",) if resume else ())
            weights = config.model.to_dict().get("backbone_weights")
            if weights:  # before the datasets are built (build_model_for checks it again)
                check_backbone_weights(weights)
            trainer = None
            try:
                trainer = Trainer(config, out, ctx, echo=echo)
                claim_run_outputs(out, RUN_OUTPUTS, ctx)
                if overwrite and not resume and ctx.is_main:
                    for name in ("last.pt", "best.pt", "metrics.json", "log.jsonl", "scores.npz"):
                        (out / name).unlink(missing_ok=True)
                trainer.fit(resume=resume)
                metrics = trainer.final_test()
            except StopSignal as stop:
                raise _interrupted(stop, out, trainer) from None
        clean = True
        return metrics
    finally:
        dist.teardown(ctx, clean=clean)


def test(cfg: Mapping[str, Any] | RunConfig, ckpt: str | Path, out_dir: str | Path, *, num_clips: int | None = None,
         echo: Callable[[str], None] = print, inputs: Iterable[Input] = ()) -> dict:
    """Evaluate a checkpoint on the config's test split with multi-clip averaging; returns metrics.

    The checkpoint must fit the test data (classes, modality, frames, size, persons, joints);
    ``metrics.json``, ``confusion_matrix.png`` and ``scores.npz`` go to ``out_dir``; none may
    overwrite ``ckpt``, the config's input files or ``inputs``, nor a file no run wrote there.
    """
    config = RunConfig.from_dict(cfg)
    ctx = dist.setup(config.train.device)
    clean = False
    try:
        with guarded_out_dir(out_dir, ctx, "test", echo=echo if ctx.is_main else lambda _m: None) as out:
            check_run_outputs(out, TEST_OUTPUTS, run_inputs(config, [("--ckpt", ckpt), *inputs]), ctx)
            try:
                set_determinism(config.train.deterministic, ctx.device)
                model = load_checkpoint(ckpt, map_location=ctx.device)
                clips = int(num_clips or config.data.num_clips)
                dataset = build_dataset(config.data, "test", train=False, num_clips=clips)
                check_fits(ckpt, model.run_config["model"], infer_shapes(dataset))
                m = evaluate(model, dataset, ctx, batch_size=config.test.batch_size or config.train.batch_size,
                             num_clips=clips, num_workers=config.train.num_workers,
                             amp=resolve_amp(config.train.amp, ctx.device), average=config.test.average)
                claim_run_outputs(out, TEST_OUTPUTS, ctx)
                metrics = write_test_outputs(m, out, model.class_names, ctx, extra={"checkpoint": str(ckpt)},
                                             echo=echo, names=video_names(dataset, config.data.test_split),
                                             split=config.data.test_split, average=config.test.average)
            except StopSignal as stop:
                raise RunInterrupted(f"stopped by {stop.name} while testing {ckpt}; {out} may hold no "
                                     "metrics.json", stop.signum) from None
        clean = True
        return metrics
    finally:
        dist.teardown(ctx, clean=clean)
