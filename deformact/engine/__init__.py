"""Training engine: run configs, the training step, train/test loops, checkpoints, torchrun support.

Modules: ``schema`` (the :class:`RunConfig` dataclasses), ``config`` (YAML files with ``_base_``
includes, ``--set`` overrides, the shipped configs), ``runtime`` (device, AMP, seeding,
determinism), ``builders`` (datasets, model, loaders), ``step`` (:func:`train_step`),
``evaluation``, ``trainer`` (:class:`Trainer`), ``api`` (:func:`run`, :func:`test`), ``checkpoint``,
``outputs`` (atomic writes, output-folder checks), ``guard`` (the run-folder lock, SIGINT/SIGTERM),
``optim``, ``metrics``, ``dist`` and ``plots``.

``run(cfg, out_dir)`` trains and tests from a config in-process and returns the final test
metrics; ``test(cfg, ckpt, out_dir)`` evaluates a checkpoint; ``load_checkpoint(path)`` returns
the eval-mode model with ``class_names`` and ``run_config``.
"""

from __future__ import annotations

from deformact.engine import dist
from deformact.engine.api import run, test
from deformact.engine.builders import build_dataset, build_model_for, infer_shapes, make_loader, model_inputs
from deformact.engine.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from deformact.engine.config import (
    CONFIG_DIR,
    apply_model_overrides,
    apply_overrides,
    config_path,
    dump_config,
    list_configs,
    load_config,
    load_run_config,
    validate_config,
)
from deformact.engine.evaluation import evaluate
from deformact.engine.guard import RunInterrupted, RunLock
from deformact.engine.runtime import autocast, resolve_amp, resolve_device, seed_everything, set_determinism
from deformact.engine.schema import DataSection, ModelSection, RunConfig, TestSection, TrainSection
from deformact.engine.step import train_step
from deformact.engine.trainer import Trainer
from deformact.errors import CheckpointError, ConfigError, TrainingError

__all__ = [
    "CONFIG_DIR", "CheckpointError", "ConfigError", "DataSection", "ModelSection", "RunConfig", "TestSection",
    "TrainSection", "Trainer", "TrainingError", "apply_model_overrides", "apply_overrides", "autocast",
    "build_dataset", "build_model_for", "config_path", "dist", "dump_config", "evaluate", "infer_shapes",
    "list_configs", "load_checkpoint", "load_config", "load_run_config", "make_loader", "model_inputs",
    "read_checkpoint", "resolve_amp", "resolve_device", "run", "RunInterrupted", "RunLock", "save_checkpoint",
    "seed_everything",
    "set_determinism", "test", "train_step", "validate_config",
]
