"""RunConfig, ``_base_`` includes, the model ``--set`` grammar, the preset registry, the training step
and device resolution."""

from __future__ import annotations

import pytest
import torch
import yaml
from test_engine import tiny_config

import deformact
from deformact.engine import (
    CONFIG_DIR,
    ConfigError,
    RunConfig,
    apply_model_overrides,
    build_dataset,
    build_model_for,
    dump_config,
    list_configs,
    load_config,
    resolve_device,
    train_step,
    validate_config,
)
from deformact.errors import DeformactError
from deformact.models import DEFAULT_PRESET, ModelConfig, build_model, list_presets, make_config, register_preset

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# --- RunConfig ------------------------------------------------------------------------------------


def test_run_config_round_trips_as_plain_data():
    cfg = RunConfig.from_dict(tiny_config(train={"ema": 0.99, "amp": "bf16"}, test={"checkpoint": "best"}))
    assert cfg.train.ema == 0.99 and cfg.train.amp == "bf16" and cfg.test.checkpoint == "best"
    assert cfg.model.preset == "demo" and cfg.model.fields["dim"] == 16 and cfg.data.type == "synthetic"
    d = cfg.to_dict()
    assert list(d) == ["model", "data", "train", "test", "epochs", "seed"]
    assert RunConfig.from_dict(d) == cfg and validate_config(d) == d  # idempotent
    assert yaml.safe_load(dump_config(cfg)) == d
    # plain data all the way down: what checkpoints store
    def plain(x):
        return isinstance(x, (str, int, float, bool, type(None))) or (
            isinstance(x, list) and all(map(plain, x))) or (isinstance(x, dict) and all(map(plain, x.values())))
    assert plain(d)


def test_one_default_preset_for_run_configs_and_build_model():
    cfg = validate_config({"data": {"type": "synthetic"}})
    assert cfg["model"]["preset"] == DEFAULT_PRESET
    assert build_model(num_classes=3).config == make_config(DEFAULT_PRESET, num_classes=3)


@pytest.mark.parametrize("section, message", [
    ({"model": {"dimension": 8}}, "model: unknown key model.dimension"),
    ({"model": {"preset": "huge"}}, "model.preset must be demo or paper, got 'huge'"),
    ({"data": {"type": "synthetic", "flp": 0}}, "data: unknown key data.flp (did you mean data.flip?)"),
    ({"data": {"type": "video"}}, "data.type must be set (pyskl or synthetic), got 'video'"),
    ({"train": {"ema": 1}}, "train.ema must be null or a decay in (0, 1)"),
    ({"train": {"clip_grad": 0}}, "train.clip_grad must be null or a number > 0, got 0"),
    ({"train": {"betas": [0.9]}}, "train.betas must be two numbers in [0, 1)"),
    ({"train": {"device": "gpu"}}, "train.device must be auto, cpu, cuda or cuda:N"),
    ({"train": {"amp": 1}}, "train.amp must be false, true, bf16 or fp16, got 1"),
    ({"train": {"label_smoothing": 1}}, "train.label_smoothing must be a number >= 0 and < 1"),
    ({"test": {"batch_size": 0}}, "test.batch_size must be null or an integer >= 1"),
    ({"test": {"average": "mean"}}, "test.average must be prob or score"),
    ({"seed": 1.5}, "seed must be an integer, got 1.5"),
    ({"train": [1]}, "train: must be a mapping"),
])
def test_fields_say_what_they_accept(section, message):
    with pytest.raises(ConfigError) as e:
        validate_config(tiny_config(**section))
    assert message in str(e.value)
    assert isinstance(e.value, DeformactError)  # caught once by the CLI


# --- _base_ includes ------------------------------------------------------------------------------


def test_base_includes_merge_in_order_relative_to_the_including_file(tmp_path):
    (tmp_path / "_base_").mkdir()
    (tmp_path / "_base_" / "a.yaml").write_text(
        "model: {preset: demo, dim: 16}\ndata: {type: synthetic, frames: 4}\ntrain: {lr: 0.1, batch_size: 4}\n")
    (tmp_path / "_base_" / "b.yaml").write_text("_base_: a.yaml\ntrain: {lr: 0.2}\nepochs: 3\n")
    (tmp_path / "_base_" / "c.yaml").write_text("train: {lr: 0.3, clip_grad: 1.0}\n")
    (tmp_path / "run.yaml").write_text("_base_: [_base_/b.yaml, _base_/c.yaml]\ndata: {num_classes: 4}\nseed: 5\n")
    cfg = load_config(tmp_path / "run.yaml", ["train.batch_size=2"])
    assert cfg["model"] == {"preset": "demo", "dim": 16}
    assert cfg["data"]["frames"] == 4 and cfg["data"]["num_classes"] == 4  # sections merge key by key
    assert cfg["train"]["lr"] == 0.3 and cfg["train"]["clip_grad"] == 1.0  # later bases win
    assert cfg["train"]["batch_size"] == 2 and cfg["epochs"] == 3 and cfg["seed"] == 5  # then the file, then --set


def test_base_include_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: [a.yaml]\n")
    with pytest.raises(ConfigError, match=r"_base_ includes form a cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("_base_: [missing.yaml]\n")
    with pytest.raises(ConfigError, match="_base_ file not found: .*missing.yaml"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("_base_: {x: 1}\n")
    with pytest.raises(ConfigError, match="_base_ must be a file name or a list"):
        load_config(tmp_path / "d.yaml")
    (tmp_path / "e.yaml").write_text("trainer: {}\n")
    (tmp_path / "f.yaml").write_text("_base_: e.yaml\ndata: {type: synthetic}\n")
    with pytest.raises(ConfigError, match=r"e\.yaml: unknown key trainer \(did you mean train\?\)"):
        load_config(tmp_path / "f.yaml")


def test_dataset_configs_hold_only_what_differs():
    for name in ("ntu60_xsub", "ntu60_xview", "ntu120_xsub", "ntu120_xset"):
        own = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
        assert set(own) == {"_base_", "data"} and set(own["data"]) == {"train_split", "test_split"}, name
    assert set(list_configs()) >= {"synthetic", "ntu60_xsub", "gym99", "penn_action_pose"}
    assert not any(n.startswith("_") for n in list_configs())


# --- the model --set grammar and the preset registry ----------------------------------------------


def test_model_overrides_share_the_run_config_grammar():
    a = apply_model_overrides("demo", ["model.rgb_attention=full", "model.joint_stride=1"], num_classes=5)
    b = apply_model_overrides("demo", ["rgb_attention=full", "joint_stride=1"], bare=True, num_classes=5)
    assert a == b == make_config("demo", rgb_attention="full", joint_stride=1, num_classes=5)
    assert apply_model_overrides("paper", ["model.preset=demo"]).dim == make_config("demo").dim
    with pytest.raises(ConfigError, match="did you mean model.depth"):
        apply_model_overrides("demo", ["model.deptj=3"])
    with pytest.raises(ConfigError, match="only model.FIELD=VALUE"):
        apply_model_overrides("demo", ["train.lr=1"], bare=True)
    with pytest.raises(ConfigError, match="only model.FIELD=VALUE"):
        apply_model_overrides("demo", ["rgb_attention=full"])  # bare names only where asked for
    with pytest.raises(ConfigError, match="ModelConfig: rgb_attention must be one of"):
        apply_model_overrides("demo", ["model.rgb_attention=sparse"])


def test_preset_registry():
    assert {"paper", "demo"} <= set(list_presets()) and DEFAULT_PRESET in list_presets()
    assert make_config("paper").dim == 256 and make_config("demo").dim == 64
    with pytest.raises(ValueError, match="unknown preset 'huge'; choose from"):
        make_config("huge")
    with pytest.raises(ValueError, match="registered twice"):
        register_preset(lambda: {})  # a lambda is named "<lambda>": fine the first time ...
        register_preset(lambda: {})  # ... and refused the second
    from deformact.models import config as model_config

    model_config.PRESETS.pop("<lambda>", None)


# --- the training step and the device --------------------------------------------------------------


def test_train_step_is_one_plain_optimizer_step():
    cfg = validate_config(tiny_config(train={"clip_grad": 0.5, "label_smoothing": 0.1}))
    ds = build_dataset(cfg["data"], "train", train=True)
    batch = torch.utils.data.default_collate([ds[i] for i in range(6)])
    torch.manual_seed(0)
    model = build_model_for(cfg["model"], ds)
    twin = build_model_for(cfg["model"], ds)
    twin.load_state_dict(model.state_dict())
    opt, twin_opt = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, twin))
    seen = []
    torch.manual_seed(1)
    loss = train_step(model, batch, opt, device=torch.device("cpu"), label_smoothing=0.1, clip_grad=0.5,
                      before_backward=lambda *a: seen.append(a))
    torch.manual_seed(1)  # the same dropout masks
    logits = twin(rgb=batch["rgb"], pose=batch["pose"], person_mask=batch["person_mask"])
    ref = torch.nn.functional.cross_entropy(logits, batch["label"], label_smoothing=0.1)
    ref.backward()
    torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.5)
    twin_opt.step()
    assert not loss.requires_grad and torch.allclose(loss, ref.detach())
    assert len(seen) == 1 and seen[0][1].shape == (6, 4) and torch.equal(seen[0][2], batch["label"])
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name
    bad = {**batch, "label": torch.full_like(batch["label"], 9)}
    with pytest.raises(deformact.errors.TrainingError, match="label 9 is out of range for 4 classes"):
        train_step(model, bad, opt, device=torch.device("cpu"))


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="--device must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        resolve_device("gpu", name="--device")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="train.device=cuda:1 asks for CUDA but no GPU is visible"):
            resolve_device("cuda:1", name="train.device")


def test_model_config_is_still_the_model_section_target():
    cfg = RunConfig.from_dict(tiny_config())
    fields = {**cfg.model.fields, "num_classes": 4}
    assert isinstance(make_config(cfg.model.preset, **fields), ModelConfig)
