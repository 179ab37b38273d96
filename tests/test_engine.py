"""Engine units: config overrides, weight-decay groups, schedule, metrics, multi-clip evaluation.

``tiny_config`` and ``tiny_pyskl`` are shared by the other tests/test_engine_*.py files.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from deformact.engine import ConfigError, apply_overrides, evaluate, load_config, validate_config
from deformact.engine.metrics import Results, merge, summarize
from deformact.engine.optim import build_scheduler, param_groups, warmup_cosine

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def tiny_config(**sections) -> dict:
    """A model and synthetic set small enough for a CPU test step in milliseconds."""
    cfg = {
        "model": {"preset": "demo", "dim": 16, "depth": 1, "heads": 2, "mlp_ratio": 2.0,
                  "backbone_channels": [8, 8, 16], "drop_path": 0.1, "head_dropout": 0.1},
        "data": {"type": "synthetic", "frames": 4, "image_size": 32, "num_classes": 4, "num_train": 48,
                 "num_test": 20},
        "train": {"batch_size": 8, "lr": 3e-3, "warmup_epochs": 0.5},
        "epochs": 2,
        "seed": 0,
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def tiny_pyskl(path: Path, num_classes: int = 4, train: int = 40, test: int = 16, seed: int = 0) -> Path:
    """A small pyskl file (1 person, COCO-17, 20-40 frames): class k moves joint 9 + k in a circle."""
    from deformact.io import save_pyskl

    rng = np.random.default_rng(seed)
    anns, names = [], {"train": [], "test": []}
    for i in range(train + test):
        split = "train" if i < train else "test"
        label, t = i % num_classes, int(rng.integers(20, 41))
        base = rng.uniform(30, 90, (1, 1, 17, 2)) + rng.normal(0, 1.5, (1, t, 17, 2))
        phase = np.linspace(0, 2 * np.pi, t)
        base[0, :, 9 + label] += 15 * np.stack([np.cos(phase), np.sin(phase)], -1)
        anns.append({"frame_dir": f"clip{i:03d}", "label": label, "total_frames": t, "img_shape": (120, 120),
                     "original_shape": (120, 120), "keypoint": base.astype(np.float32),
                     "keypoint_score": rng.uniform(0.5, 1.0, (1, t, 17)).astype(np.float32)})
        names[split].append(f"clip{i:03d}")
    save_pyskl({"split": names, "annotations": anns, "class_names": [f"move{k}" for k in range(num_classes)]}, path)
    return path


# --- config ---------------------------------------------------------------------------------------


def test_overrides_parse_yaml_values_and_nest():
    cfg = apply_overrides(tiny_config(), ["train.lr=1e-3", "train.betas=[0.8, 0.9]", "train.clip_grad=null",
                                          "model.joint_stride=1", "data.ann_file=/x/y.pkl", "epochs=3",
                                          "train.amp=bf16", "test.checkpoint=best", "train.deterministic=false"])
    assert cfg["train"]["lr"] == 1e-3 and isinstance(cfg["train"]["lr"], float)  # YAML 1.1 would say "1e-3"
    assert cfg["train"]["betas"] == [0.8, 0.9] and cfg["train"]["clip_grad"] is None
    assert cfg["model"]["joint_stride"] == 1 and cfg["data"]["ann_file"] == "/x/y.pkl"
    assert cfg["epochs"] == 3 and cfg["train"]["deterministic"] is False
    full = validate_config(cfg)
    assert full["train"]["weight_decay"] == 0.05  # defaults filled in
    assert tiny_config()["train"]["lr"] == 3e-3  # the input was not modified


@pytest.mark.parametrize("override, message", [
    ("trian.lr=1", "unknown key trian (did you mean train?)"),
    ("train.lrr=1", "unknown key train.lrr (did you mean train.lr?)"),
    ("train.lr", "expected KEY=VALUE"),
    ("=3", "expected KEY=VALUE"),
    ("epochs.x=3", "epochs is not a section"),
    ("train.optimizer=adam", "train.optimizer must be adamw or sgd"),
    ("train.lr=-1", "train.lr must be a number > 0"),
    ("train.batch_size=2.5", "train.batch_size must be an integer"),
    ("train.amp=fp32", "train.amp must be"),
    ("epochs=ten", "epochs must be an integer"),
])
def test_bad_overrides_are_clear(override, message):
    with pytest.raises(ConfigError) as e:
        validate_config(apply_overrides(tiny_config(), [override]))
    assert message in str(e.value)


def test_config_files_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1, 2\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line"):
        load_config(bad)
    bad.write_text("trainer: {lr: 1}\n")
    with pytest.raises(ConfigError, match="unknown key trainer"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_config(bad)


SPLITS = {"ntu60_xsub": ("xsub_train", "xsub_val"), "ntu60_xview": ("xview_train", "xview_val"),
          "ntu120_xsub": ("xsub_train", "xsub_val"), "ntu120_xset": ("xset_train", "xset_val"),
          "gym99": ("train", "val"), "penn_action": ("train", "test"), "penn_action_pose": ("train", "test"),
          "synthetic": ("train", "test")}


@pytest.mark.parametrize("name", sorted(SPLITS))
def test_shipped_configs(name):
    path = REPO / "configs" / f"{name}.yaml"
    cfg = load_config(path, ["data.ann_file=elsewhere.pkl", "epochs=1", "seed=3"])
    assert (cfg["data"]["train_split"], cfg["data"]["test_split"]) == SPLITS[name]
    assert cfg["data"]["ann_file" if name != "synthetic" else "type"] in ("elsewhere.pkl", "synthetic")
    assert cfg["epochs"] == 1 and cfg["seed"] == 3
    text = path.read_text()
    assert "ours" in text  # each file says what is ours (and, for the paper's datasets, what is the paper's)
    if name not in ("synthetic", "penn_action_pose"):
        assert "[paper]" in text and cfg["model"]["preset"] == "paper"
    label_map = {"ntu60": "ntu60.txt", "ntu120": "ntu120.txt", "gym99": "gym99.txt"}.get(name.split("_")[0])
    if label_map:
        assert f"label_maps/{label_map}" in text and "label_map" in cfg["data"]


# --- optimization ---------------------------------------------------------------------------------


def test_weight_decay_groups_skip_norms_biases_embeddings_tokens():
    import deformact

    model = deformact.build_model(preset="demo", num_classes=5)
    decay, skip = param_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and skip["weight_decay"] == 0.0
    skipped = {id(p) for p in skip["params"]}
    named = dict(model.named_parameters())
    assert len(decay["params"]) + len(skip["params"]) == len(named)
    embeddings = ("pos_embed.", "tokens.", "pose_embed.joint_embed", "pose_embed.time_embed", "pose_embed.joint_bias")
    for name, p in named.items():
        # norms and biases are 1-D; every other weight matrix / conv kernel is decayed
        expect_skip = p.ndim <= 1 or name.startswith(embeddings)
        assert (id(p) in skipped) == expect_skip, name


def test_offset_networks_train_at_their_own_lr_through_the_schedule():
    import deformact
    from deformact.engine.optim import build_optimizer, build_scheduler

    model = deformact.build_model(preset="demo", num_classes=5, search_anchors="joints")
    cfg = {"optimizer": "adamw", "lr": 2e-3, "min_lr": 0.0, "weight_decay": 0.05, "betas": [0.9, 0.999],
           "warmup_epochs": 1, "offset_lr_mult": 0.1}
    opt = build_optimizer(model, cfg)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert len(lr_of) == len(named)
    offsets = {n for n in named if ".search." in n or ".anchor.offset" in n}
    assert any("anchor.offset_out" in n for n in offsets) and any("search.dwconv" in n for n in offsets)
    assert not any("anchor.key" in n or "attn.pos" in n for n in offsets)  # the keys learn at the base lr
    for name, p in named.items():
        assert lr_of[id(p)] == pytest.approx(2e-4 if name in offsets else 2e-3), name
    sched = build_scheduler(opt, cfg, epochs=3, steps_per_epoch=4)
    for _ in range(6):
        opt.step()
        sched.step()
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs[2] == pytest.approx(0.1 * lrs[0]) and lrs[0] < 2e-3
    # the default keeps the two weight-decay groups of old
    assert len(build_optimizer(model, {**cfg, "offset_lr_mult": 1.0}).param_groups) == 2


def test_warmup_cosine_schedule():
    total, warm = 100, 10
    values = [warmup_cosine(s, total, warm, 0.01) for s in range(total + 1)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(values[:10], values[1:10]))  # linear ramp up
    assert all(a >= b for a, b in zip(values[10:], values[11:]))  # then down
    assert values[55] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert values[-1] == pytest.approx(0.01)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = build_scheduler(opt, {"warmup_epochs": 0.5, "min_lr": 0.0, "lr": 0.5}, epochs=2, steps_per_epoch=4)
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.25) and lrs[1] == pytest.approx(0.5) and lrs[-1] < 0.05


# --- metrics --------------------------------------------------------------------------------------


def test_metrics_by_hand_and_shard_merge():
    scores = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1], [0.2, 0.3, 0.5]])
    label = torch.tensor([0, 1, 1, 2])
    whole = Results()
    whole.add(torch.arange(4), label, scores, "prob")
    m = summarize(merge([whole.arrays()]), 3)
    assert m["top1"] == 0.5 and m["top5"] == 1.0
    assert m["mean_class_acc"] == pytest.approx((1 + 0 + 1) / 3)
    assert m["loss"] == pytest.approx(-np.mean(np.log([0.7, 0.3, 0.4, 0.5])))
    assert m["confusion"] == [[1, 0, 0], [1, 0, 1], [0, 0, 1]]
    # two shards in any order give the very same numbers (what torchrun evaluation relies on)
    a, b = Results(), Results()
    b.add(torch.tensor([1, 3]), label[[1, 3]], scores[[1, 3]], "prob")
    a.add(torch.tensor([0, 2]), label[[0, 2]], scores[[0, 2]], "prob")
    assert summarize(merge([b.arrays(), a.arrays()]), 3) == m


def test_multi_clip_evaluation_averages_softmax_per_video():
    import deformact
    from deformact.data import build_dataset

    torch.manual_seed(0)
    data = tiny_config()["data"]
    kwargs = {k: v for k, v in data.items() if k not in ("train_split", "test_split")}
    ds = build_dataset(**kwargs, split="test", train=False, num_clips=3)
    model = deformact.build_model(preset="demo", num_classes=4, frames=4, image_size=32, dim=16, depth=1,
                                  heads=2, backbone_channels=(8, 8, 16)).eval()
    got = evaluate(model, ds, batch_size=7, num_clips=3)
    probs, labels = [], []
    with torch.no_grad():
        for i in range(len(ds)):
            item = ds[i]
            assert item["pose"].shape[0] == 3 and item["rgb"].shape[0] == 3
            clip_probs = [model(rgb=item["rgb"][c:c + 1], pose=item["pose"][c:c + 1],
                                person_mask=item["person_mask"][c:c + 1]).softmax(-1) for c in range(3)]
            probs.append(torch.cat(clip_probs).mean(0))
            labels.append(item["label"])
    probs, labels = torch.stack(probs), torch.tensor(labels)
    assert got["num_clips"] == 3 and got["num_samples"] == len(ds)
    assert got["top1"] == pytest.approx((probs.argmax(1) == labels).float().mean().item())
    assert got["loss"] == pytest.approx(-probs[torch.arange(len(ds)), labels].log().mean().item(), rel=1e-5)
    by_logits = evaluate(model, ds, batch_size=7, num_clips=3, average="score")
    assert by_logits["num_samples"] == len(ds) and 0 <= by_logits["top1"] <= 1
