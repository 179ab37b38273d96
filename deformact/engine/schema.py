"""The run config as dataclasses: :class:`RunConfig` = model, data, train and test sections plus
``epochs`` and ``seed``.

Each field of the train and test sections declares its type, default and allowed values once
(:func:`option`); :meth:`RunConfig.from_dict` checks a config against those declarations and
:meth:`RunConfig.to_dict` gives it back as plain data (dicts, lists, numbers, strings), which is
what a checkpoint stores so that it loads with ``torch.load(weights_only=True)``. The ``model``
section is a preset plus ModelConfig fields (checked by ModelConfig when the model is built, once
the data has fixed the shapes); the ``data`` section is a dataset type plus the keywords its
builder knows (``deformact.data.PYSKL_KEYS`` / ``SYNTHETIC_KEYS``).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from deformact.errors import ConfigError
from deformact.models.config import DEFAULT_PRESET, ModelConfig, list_presets

_MISSING = dataclasses.MISSING


def option(default: Any = _MISSING, *, choices: tuple | None = None, ge: float | None = None,
           gt: float | None = None, lt: float | None = None, check: Callable[[Any], bool] | None = None,
           expect: str | None = None, also: tuple = ()) -> Any:
    """A config field: its default and what it accepts besides its annotated type.

    ``choices``: the only values allowed; ``ge`` / ``gt`` / ``lt``: bounds for numbers; ``check``:
    any further test; ``expect``: the wording of "must be ..." in the error (derived otherwise);
    ``also``: extra values accepted as they are (e.g. ``false`` for "off").
    """
    meta = {"choices": choices, "ge": ge, "gt": gt, "lt": lt, "check": check, "expect": expect, "also": also}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def _yaml(value: Any) -> str:
    """How YAML spells ``value`` (``true``, ``null``...), for error messages."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)


def _one_of(values: Iterable[Any]) -> str:
    words = [_yaml(v) for v in values]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _is(value: Any, kind: str) -> bool:
    if kind == "None":
        return value is None
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "list[float]":
        return isinstance(value, (list, tuple)) and all(_is(v, "float") for v in value)
    raise TypeError(f"option type {kind!r} is not supported")


def _expectation(kinds: list[str], meta: Mapping[str, Any]) -> str:
    if meta["expect"]:
        return meta["expect"]
    if meta["choices"] is not None:
        return _one_of(meta["choices"])
    words = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
             "list[float]": "a list of numbers"}
    kind = next(words[k] for k in kinds if k != "None")
    bounds = [f"{op} {_yaml(meta[key])}" for key, op in (("ge", ">="), ("gt", ">"), ("lt", "<"))
              if meta[key] is not None]
    text = " ".join([kind, " and ".join(bounds)]).strip()
    return f"null or {text}" if "None" in kinds else text


def check_value(path: str, value: Any, f: dataclasses.Field) -> Any:
    """``value`` if the field ``f`` accepts it, else a ConfigError saying what it must be."""
    meta = f.metadata
    kinds = [k.strip() for k in str(f.type).split("|")]
    if any(value is a or (type(value) is type(a) and value == a) for a in meta.get("also", ())):
        return value
    if any(_is(value, k) for k in kinds) and (value is None or _within(value, meta)):
        return list(value) if isinstance(value, tuple) else value
    raise ConfigError(f"{path} must be {_expectation(kinds, meta)}, got {value!r}")


def _within(value: Any, meta: Mapping[str, Any]) -> bool:
    if meta.get("choices") is not None and not any(type(value) is type(c) and value == c for c in meta["choices"]):
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if (meta.get("ge") is not None and value < meta["ge"]) or (meta.get("gt") is not None and value <= meta["gt"]):
            return False
        if meta.get("lt") is not None and value >= meta["lt"]:
            return False
    return meta.get("check") is None or bool(meta["check"](value))


def unknown_key(path: str, known: Iterable[str]) -> ConfigError:
    """``unknown key train.lrr (did you mean train.lr?); expected one of: ...``."""
    prefix, _, key = path.rpartition(".")
    known = [str(k) for k in known]
    hint = difflib.get_close_matches(key, known, n=1)
    also = f" (did you mean {prefix + '.' if prefix else ''}{hint[0]}?)" if hint else ""
    return ConfigError(f"unknown key {path}{also}; expected one of: {', '.join(known)}")


def _mapping(name: str, value: Any) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name}: must be a mapping, got {value!r}")
    return value


class Section:
    """A section whose dataclass fields are declared with :func:`option`."""

    NAME = ""

    @classmethod
    def from_dict(cls, d: Any) -> Section:
        d = _mapping(cls.NAME, d)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in d:
            if key not in fields:
                raise unknown_key(f"{cls.NAME}.{key}", fields)
        return cls(**{k: check_value(f"{cls.NAME}.{k}", v, fields[k]) for k, v in d.items()})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass
class TrainSection(Section):
    """``train:`` everything the optimization reads (all of it ours: the paper gives no settings)."""

    NAME = "train"
    optimizer: str = option("adamw", choices=("adamw", "sgd"))
    lr: float = option(1e-3, gt=0)  # peak learning rate (after warm-up)
    min_lr: float = option(0.0, ge=0)  # end of the cosine schedule
    weight_decay: float = option(0.05, ge=0)  # not applied to norms, biases, embeddings, tokens
    # lr multiplier of the 3DTS offset networks (docs/DESIGN.md, "joint anchors"); Deformable DETR
    # trains its sampling offsets at 0.1x
    offset_lr_mult: float = option(1.0, gt=0)
    momentum: float = option(0.9, ge=0)  # sgd only
    nesterov: bool = option(True)  # sgd only
    betas: list[float] = option([0.9, 0.999], check=lambda b: len(b) == 2 and all(0 <= x < 1 for x in b),
                                expect="two numbers in [0, 1)")  # adamw only
    batch_size: int = option(16, ge=1)  # per process (per GPU under torchrun)
    warmup_epochs: float = option(0.0, ge=0)  # linear warm-up, counted in optimizer steps
    label_smoothing: float = option(0.0, ge=0, lt=1)
    clip_grad: float | None = option(None, gt=0)  # max global grad norm
    amp: bool | str | None = option(False, choices=(False, True, None, "none", "bf16", "fp16", "auto"),
                                    expect="false, true, bf16 or fp16")  # true: bf16 where native, else fp16/fp32
    ema: float | None = option(None, gt=0, lt=1, check=lambda v: isinstance(v, float), also=(False,),
                               expect="null or a decay in (0, 1) such as 0.999")  # evaluation uses the EMA
    num_workers: int = option(0, ge=0)
    eval_every: int = option(1, ge=0)  # evaluate every N epochs (and after the last); 0: only after the last
    eval_clips: int = option(1, ge=1)  # clips per video in per-epoch evaluation (final test: data.num_clips)
    device: str = option("auto", check=lambda d: d in ("auto", "cpu", "cuda") or (
        d.startswith("cuda:") and d[5:].isdigit()), expect="auto, cpu, cuda or cuda:N")
    deterministic: bool = option(True)  # deterministic kernels; exact resume on GPU needs it
    log_every: int = option(20, ge=1)  # TensorBoard train-loss scalar every N steps


@dataclass
class TestSection(Section):
    """``test:`` the final test."""

    __test__ = False  # not a pytest class
    NAME = "test"
    batch_size: int | None = option(None, ge=1)  # videos per batch (null: train.batch_size)
    checkpoint: str = option("last", choices=("last", "best"))  # best = best per-epoch top-1
    average: str = option("prob", choices=("prob", "score"))  # multi-clip: softmax or logits


@dataclass
class ModelSection:
    """``model:`` a preset and ModelConfig fields overriding it (shapes the data fixes may be left out)."""

    preset: str = DEFAULT_PRESET
    fields: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> ModelSection:
        d = dict(_mapping("model", d))
        preset = d.pop("preset", DEFAULT_PRESET)
        if preset not in list_presets():
            raise ConfigError(f"model.preset must be {_one_of(list_presets())}, got {preset!r}")
        known = [f.name for f in dataclasses.fields(ModelConfig)]
        for key in d:
            if key not in known:
                raise ConfigError(f"model: {unknown_key(f'model.{key}', ['preset', *known])}")
        return cls(preset=preset, fields=d)

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset, **self.fields}


def data_keys() -> dict[str, tuple[str, ...]]:
    """Dataset type -> the keywords its builder takes (besides ``type`` and the split names)."""
    from deformact.data import PYSKL_KEYS, SYNTHETIC_KEYS

    return {"pyskl": tuple(PYSKL_KEYS), "synthetic": tuple(SYNTHETIC_KEYS)}


@dataclass
class DataSection:
    """``data:`` a dataset type, the split names and the keywords of its builder."""

    type: str
    train_split: str = "train"
    test_split: str = "test"
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any) -> DataSection:
        d = dict(_mapping("data", d))
        kinds = data_keys()
        kind = d.pop("type", None)
        if kind not in kinds:
            got = "" if kind is None else f", got {kind!r}"
            raise ConfigError(f"data.type must be set ({_one_of(sorted(kinds))}){got}")
        splits = {k: d.pop(k) for k in ("train_split", "test_split") if k in d}
        for key, value in splits.items():
            if not isinstance(value, str):
                raise ConfigError(f"data.{key} must be a split name, got {value!r}")
        # typos are caught here; a key of the other type (ann_file on a synthetic set) is refused by
        # the builder when the dataset is built, so one file can switch data.type with --set
        known = ["type", "train_split", "test_split", *dict.fromkeys(k for keys in kinds.values() for k in keys)]
        for key in d:
            if key not in known:
                raise ConfigError(f"data: {unknown_key(f'data.{key}', known)}")
        return cls(type=kind, **splits, options=d)

    @property
    def num_clips(self) -> int:
        """Clips per video at the final test (``data.num_clips``, 1 when unset)."""
        return int(self.options.get("num_clips", 1) or 1)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "train_split": self.train_split, "test_split": self.test_split, **self.options}


@dataclass
class RunConfig:
    """One experiment: what to build (model, data), how to train and test it, for how long, which seed."""

    model: ModelSection
    data: DataSection
    train: TrainSection = field(default_factory=TrainSection)
    test: TestSection = field(default_factory=TestSection)
    epochs: int = option(30, ge=1)  # a test-only run is `deformact test`
    seed: int = option(0)

    SECTIONS = ("model", "data", "train", "test")

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The top-level keys of a run config, in file order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, d: Any) -> RunConfig:
        """Check ``d`` (a config dict) against the declarations; missing keys take their defaults."""
        if isinstance(d, RunConfig):
            return d
        if not isinstance(d, Mapping):
            raise ConfigError(f"a config must be a mapping, got {type(d).__name__}")
        keys = cls.keys()
        for key in d:
            if key not in keys:
                raise unknown_key(str(key), keys)
        d = {k: v for k, v in d.items() if v is not None}
        for name in cls.SECTIONS:
            _mapping(name, d.get(name))
        scalars = {f.name: check_value(f.name, d[f.name], f) for f in dataclasses.fields(cls)
                   if f.name not in cls.SECTIONS and f.name in d}
        return cls(model=ModelSection.from_dict(d.get("model")), data=DataSection.from_dict(d.get("data")),
                   train=TrainSection.from_dict(d.get("train")), test=TestSection.from_dict(d.get("test")),
                   **scalars)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the form ``config.yaml`` and checkpoints hold)."""
        out = {name: getattr(self, name).to_dict() for name in self.SECTIONS}
        return {**out, "epochs": self.epochs, "seed": self.seed}
