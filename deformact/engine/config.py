"""Run configs: YAML files + ``--set a.b=c`` overrides, merged onto defaults and validated.

A run config is plain data (dicts, lists, numbers, strings) so that it can be stored inside a
checkpoint that loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config file or override that the user can fix (printed as one line by the CLI)."""


# Everything the engine itself reads. `model` and `data` are validated by their own builders
# (ModelConfig fields, build_dataset keywords), so only their presence is checked here.
DEFAULTS: dict[str, Any] = {
    "model": {"preset": "demo"},
    "data": {},  # passed to deformact.data.build_dataset; `type` is required
    "train": {
        "optimizer": "adamw",  # adamw | sgd
        "lr": 1e-3,  # peak learning rate (after warm-up)
        "min_lr": 0.0,  # end of the cosine schedule
        "weight_decay": 0.05,  # not applied to norms, biases, embeddings, tokens
        "momentum": 0.9,  # sgd only
        "nesterov": True,  # sgd only
        "betas": [0.9, 0.999],  # adamw only
        "batch_size": 16,  # per process (per GPU under torchrun)
        "warmup_epochs": 0.0,  # linear warm-up, counted in optimizer steps (fractions allowed)
        "label_smoothing": 0.0,
        "clip_grad": None,  # max global grad norm, or null
        "amp": False,  # false | bf16 | fp16 (GPU only) | true (= fp16 on GPU, bf16 on CPU)
        "ema": None,  # null or an EMA decay such as 0.999; evaluation then uses the EMA weights
        "num_workers": 0,
        "eval_every": 1,  # evaluate on the test split every N epochs (and after the last)
        "eval_clips": 1,  # clips per video during per-epoch evaluation (final test: data.num_clips)
        "device": "auto",  # auto | cpu | cuda | cuda:N
        "deterministic": True,  # deterministic algorithms; exact resume on CPU needs it
        "log_every": 20,  # TensorBoard train-loss scalar every N steps
    },
    "test": {
        "batch_size": None,  # videos per batch at test time (null: train.batch_size)
        "checkpoint": "last",  # weights for the final test: last | best (best = best eval top-1)
        "average": "prob",  # multi-clip averaging: prob (softmax) | score (logits)
    },
    "epochs": 30,
    "seed": 0,
}

TOP_LEVEL = tuple(DEFAULTS)


def _yaml_loader() -> type[yaml.SafeLoader]:
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(
            r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
            |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
            |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
            |[-+]?\.(?:inf|Inf|INF)
            |\.(?:nan|NaN|NAN))$""",
            re.X,
        ),
        list("-+0123456789."),
    )
    return Loader


_LOADER = _yaml_loader()


def parse_value(text: str) -> Any:
    """Parse one override value as YAML (``3`` -> int, ``1e-3`` -> float, ``[1, 2]`` -> list)."""
    try:
        return yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError:
        return text  # e.g. "a: b: c" -- keep it as the literal string the user typed


def _merge(base: dict, update: Mapping) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _unknown(key: str, known: Iterable[str], where: str) -> ConfigError:
    known = list(known)
    hint = difflib.get_close_matches(key, known, n=1)
    also = f" (did you mean {hint[0]!r}?)" if hint else ""
    return ConfigError(f"unknown key {where}{key!r}{also}; expected one of: {', '.join(known)}")


def apply_overrides(cfg: Mapping, overrides: Iterable[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a copy of ``cfg``."""
    out = copy.deepcopy(dict(cfg))
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"bad override {item!r}: expected KEY=VALUE, e.g. train.lr=1e-3")
        parts = key.split(".")
        if parts[0] not in TOP_LEVEL:
            raise _unknown(parts[0], TOP_LEVEL, "")
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"bad override {item!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = parse_value(raw)
    return out


def validate_config(cfg: Mapping) -> dict:
    """Merge ``cfg`` onto :data:`DEFAULTS` and check what the engine reads. Returns a new dict."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"a config must be a mapping, got {type(cfg).__name__}")
    for key in cfg:
        if key not in TOP_LEVEL:
            raise _unknown(str(key), TOP_LEVEL, "")
    for section in ("model", "data", "train", "test"):
        if cfg.get(section) is not None and not isinstance(cfg[section], Mapping):
            raise ConfigError(f"{section}: must be a mapping, got {cfg[section]!r}")
    out = _merge(DEFAULTS, {k: v for k, v in cfg.items() if v is not None})
    for section in ("train", "test"):
        for key in out[section]:
            if key not in DEFAULTS[section]:
                raise _unknown(key, DEFAULTS[section], f"{section}.")
    t = out["train"]

    def check(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    def number(section: str, key: str, lo: float = 0.0, integer: bool = False, strict: bool = False) -> None:
        v = out[section][key]
        kind = int if integer else (int, float)
        good = isinstance(v, kind) and not isinstance(v, bool) and (v > lo if strict else v >= lo)
        check(good, f"{section}.{key} must be {'an integer' if integer else 'a number'} "
                    f"{'>' if strict else '>='} {lo}, got {v!r}")

    check(isinstance(out["epochs"], int) and not isinstance(out["epochs"], bool) and out["epochs"] >= 0,
          f"epochs must be an integer >= 0, got {out['epochs']!r}")
    check(isinstance(out["seed"], int) and not isinstance(out["seed"], bool),
          f"seed must be an integer, got {out['seed']!r}")
    check(t["optimizer"] in ("adamw", "sgd"), f"train.optimizer must be adamw or sgd, got {t['optimizer']!r}")
    number("train", "lr", strict=True)
    number("train", "min_lr")
    number("train", "weight_decay")
    number("train", "momentum")
    number("train", "warmup_epochs")
    number("train", "label_smoothing")
    check(t["label_smoothing"] < 1, f"train.label_smoothing must be < 1, got {t['label_smoothing']!r}")
    number("train", "batch_size", lo=1, integer=True)
    number("train", "num_workers", integer=True)
    number("train", "eval_every", integer=True)
    number("train", "eval_clips", lo=1, integer=True)
    number("train", "log_every", lo=1, integer=True)
    check(isinstance(t["betas"], (list, tuple)) and len(t["betas"]) == 2
          and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in t["betas"]),
          f"train.betas must be two numbers in [0, 1), got {t['betas']!r}")
    if t["clip_grad"] is not None:
        number("train", "clip_grad", strict=True)
    if t["ema"] is not None and t["ema"] is not False:
        check(isinstance(t["ema"], float) and 0 < t["ema"] < 1,
              f"train.ema must be null or a decay in (0, 1) such as 0.999, got {t['ema']!r}")
    check(t["amp"] in (False, True, None, "none", "bf16", "fp16", "auto"),
          f"train.amp must be false, true, bf16 or fp16, got {t['amp']!r}")
    check(isinstance(t["device"], str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", t["device"]) is not None,
          f"train.device must be auto, cpu, cuda or cuda:N, got {t['device']!r}")
    check(isinstance(t["deterministic"], bool),
          f"train.deterministic must be true or false, got {t['deterministic']!r}")
    te = out["test"]
    if te["batch_size"] is not None:
        number("test", "batch_size", lo=1, integer=True)
    check(te["checkpoint"] in ("last", "best"), f"test.checkpoint must be last or best, got {te['checkpoint']!r}")
    check(te["average"] in ("prob", "score"), f"test.average must be prob or score, got {te['average']!r}")
    check(isinstance(out["model"].get("preset", "demo"), str), "model.preset must be a preset name")
    check(isinstance(out["data"].get("type"), str), "data.type must be set (synthetic or pyskl)")
    return out


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> dict:
    """Read a YAML run config, apply ``--set`` overrides and validate it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"{path}: not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (YAML) file") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(raw).__name__}")
    for key in raw:
        if key not in TOP_LEVEL:
            raise ConfigError(f"{path}: {_unknown(str(key), TOP_LEVEL, '')}")
    return validate_config(apply_overrides(raw, overrides))


def dump_config(cfg: Mapping) -> str:
    """YAML text of a config (what ``DIR/config.yaml`` holds)."""
    return yaml.safe_dump(dict(cfg), sort_keys=False, default_flow_style=None)
