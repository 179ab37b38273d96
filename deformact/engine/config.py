"""Run configs on disk and on the command line: YAML files with ``_base_`` includes, ``--set
a.b=value`` overrides, and where the shipped configs live.

A config file may start with ``_base_: [_base_/x.yaml, ...]`` (paths relative to the file, as in
mmaction2 / pyskl): the bases are merged in order, section by section, then the file's own keys
on top, so a dataset's file holds only what differs from the shared blocks. The merged dict is
checked by :class:`~deformact.engine.schema.RunConfig`. The shipped configs are package data in
``deformact/configs/`` (:data:`CONFIG_DIR`), so ``load_config("synthetic")`` finds
``synthetic.yaml`` from any working directory; a path that exists is always read as given.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from deformact.engine.schema import ModelSection, RunConfig, unknown_key
from deformact.errors import ConfigError
from deformact.models.config import DEFAULT_PRESET, ModelConfig, make_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
BASE_KEY = "_base_"


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


def _merge(base: Mapping, update: Mapping) -> dict:
    """``update`` over ``base``: mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --- locating and reading files ------------------------------------------------------------------


def list_configs() -> list[str]:
    """Names of the shipped configs (``deformact/configs/*.yaml``, bases left out)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def config_path(name: str | Path) -> Path:
    """The file a ``-c`` argument means: the path itself when it exists, else a shipped config
    by name (``synthetic`` or ``synthetic.yaml``); ConfigError when neither exists."""
    path = Path(name)
    if path.is_file():
        return path
    if path.parent == Path(".") and path.name:
        shipped = CONFIG_DIR / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
        if shipped.is_file():
            return shipped
    raise ConfigError(f"config file not found: {path}")


def _read_yaml(path: Path) -> dict:
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
    return raw


def read_config_file(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict:
    """A config file with its ``_base_`` files merged in (not yet validated)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    key = path.resolve()
    if key in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain[_chain.index(key):], key))
        raise ConfigError(f"{path}: {BASE_KEY} includes form a cycle: {cycle}")
    raw = _read_yaml(path)
    bases = raw.pop(BASE_KEY, [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: {BASE_KEY} must be a file name or a list of file names, got {bases!r}")
    keys = RunConfig.keys()
    for name in raw:
        if name not in keys:
            raise ConfigError(f"{path}: {unknown_key(str(name), keys)}")
    merged: dict = {}
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            raise ConfigError(f"{path}: {BASE_KEY} file not found: {base_path}")
        merged = _merge(merged, read_config_file(base_path, (*_chain, key)))
    return _merge(merged, raw)


# --- overrides ------------------------------------------------------------------------------------


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (``["a", "b"]``, value parsed as YAML)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"bad override {item!r}: expected KEY=VALUE, e.g. train.lr=1e-3")
    return key.split("."), parse_value(raw)


def apply_overrides(cfg: Mapping | RunConfig, overrides: Iterable[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a copy of ``cfg``; a whole
    section can be replaced too (``data={type: synthetic}``)."""
    out = copy.deepcopy(cfg.to_dict() if isinstance(cfg, RunConfig) else dict(cfg))
    keys = RunConfig.keys()
    for item in overrides:
        parts, value = parse_override(item)
        if parts[0] not in keys:
            raise unknown_key(parts[0], keys)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"bad override {item!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def apply_model_overrides(preset: str = DEFAULT_PRESET, overrides: Iterable[str] = (), *, bare: bool = False,
                          **fields: Any) -> ModelConfig:
    """A ModelConfig from a preset, keyword ``fields`` and ``--set model.FIELD=VALUE`` overrides
    (the run-config grammar; ``model.preset=NAME`` switches the preset). With ``bare``, ``FIELD=VALUE``
    means ``model.FIELD=VALUE`` (``deformact info``, which has no other sections)."""
    section: dict[str, Any] = {"preset": preset, **fields}
    for item in overrides:
        parts, value = parse_override(item)
        if bare and len(parts) == 1 and parts[0] not in RunConfig.keys():
            parts = ["model", *parts]
        if len(parts) != 2 or parts[0] != "model":
            raise ConfigError(f"bad override {item!r}: only model.FIELD=VALUE applies to a model")
        section[parts[1]] = value
    model = ModelSection.from_dict(section)
    try:
        return make_config(model.preset, **model.fields)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model: {e}") from None


# --- the public entry points -----------------------------------------------------------------------


def validate_config(cfg: Mapping | RunConfig) -> dict:
    """Check ``cfg`` and fill in the defaults; returns a new plain dict (:meth:`RunConfig.to_dict`)."""
    return RunConfig.from_dict(cfg).to_dict()


def load_run_config(path: str | Path, overrides: Iterable[str] = ()) -> RunConfig:
    """Read a YAML run config (a path or a shipped config's name), apply ``--set`` overrides, check it."""
    return RunConfig.from_dict(apply_overrides(read_config_file(config_path(path)), overrides))


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> dict:
    """:func:`load_run_config` as a plain dict."""
    return load_run_config(path, overrides).to_dict()


def dump_config(cfg: Mapping | RunConfig) -> str:
    """YAML text of a config (what ``DIR/config.yaml`` holds)."""
    data = cfg.to_dict() if isinstance(cfg, RunConfig) else dict(cfg)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
