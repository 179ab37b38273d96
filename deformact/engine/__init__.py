"""Training engine: configs, train/test loops, checkpoints, torchrun support (issue 4).

``run(cfg, out_dir)`` trains and tests from a config dict in-process and returns the final test
metrics; ``test(cfg, ckpt, out_dir)`` evaluates a checkpoint; ``load_checkpoint(path)`` returns
the eval-mode model with ``class_names`` and ``run_config``.
"""

from __future__ import annotations

from deformact.engine.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from deformact.engine.config import ConfigError, apply_overrides, load_config, validate_config
from deformact.engine.trainer import TrainingError, evaluate, run, test


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions a user can cause (bad config, data or checkpoint): the CLI prints them as one line."""
    errors: tuple[type[BaseException], ...] = (ConfigError, CheckpointError, TrainingError)
    try:
        from deformact.data import DataError
    except ImportError:
        return errors
    return (*errors, DataError)


__all__ = [
    "CheckpointError", "ConfigError", "TrainingError", "apply_overrides", "evaluate", "load_checkpoint",
    "load_config", "read_checkpoint", "run", "save_checkpoint", "test", "user_errors", "validate_config",
]
