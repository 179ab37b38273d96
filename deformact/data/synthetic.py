"""Synthetic cross-modal action set: animated COCO-17 stick figures + their 2D poses.

The demo's embedded default. Deterministic by seed, generated in memory in seconds.

Classes are ``motion x appearance`` (label = motion * num_colours + colour):

* motions: raise the left arm, raise the right arm, kick the left leg, kick the right leg. The
  figure faces the camera or turns its back with probability 1/2 each, and is drawn left/right
  symmetric with no face, so a *left*-arm raise seen from the front renders exactly the same
  pixels as a *right*-arm raise seen from the back (``tests/test_data_synthetic.py`` checks the
  pixels are equal). The pose names the joints, so the side is plain there.
* appearances: the figure's colour (``num_colours = num_classes / 4``: red, green, blue, ...),
  which no joint coordinate carries: for fixed nuisances the pose is identical across colours.

Bayes ceilings (top-1) follow exactly: **pose-only = 1 / num_colours** (1/3 for the default 12
classes: the motion is known, the colour is not), **RGB-only = 1/2** (colour and arm/leg are
visible, the side is not), **both = 1** up to noise. Nuisances: figure size, position, facing,
speed (0.7-1.5 cycles per clip), phase, amplitude, idle sway of the other limbs, body sway, colour
brightness, textured noisy background, a second idle grey person (probability 0.35), pose noise,
scores in [0.55, 1] and 3 % dropped joints. The generator never flips: its classes are chiral.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from deformact.errors import DataError

from .sampling import segment_indices  # noqa: F401  (same clock as real data: frame i of T at (i + u) / T)
from .skeletons import COCO17
from .transforms import normalize

MOTIONS = ("raise_left_arm", "raise_right_arm", "kick_left_leg", "kick_right_leg")
PALETTE = (("red", (0.85, 0.13, 0.10)), ("green", (0.12, 0.70, 0.18)), ("blue", (0.18, 0.32, 0.95)),
           ("yellow", (0.92, 0.80, 0.08)), ("magenta", (0.80, 0.15, 0.80)), ("cyan", (0.08, 0.80, 0.85)))
P_SECOND = 0.35
_BANK = 256  # frames of sensor noise, picked per frame


def class_names(num_classes: int = 12) -> list[str]:
    """``<motion>_<colour>`` for label = motion * num_colours + colour."""
    nc = _num_colours(num_classes)
    return [f"{m}_{PALETTE[c][0]}" for m in MOTIONS for c in range(nc)]


def _num_colours(num_classes: int) -> int:
    if num_classes % len(MOTIONS) or not 1 <= num_classes // len(MOTIONS) <= len(PALETTE):
        raise DataError(f"synthetic num_classes must be 4 x (1..{len(PALETTE)}) colours, got {num_classes}")
    return num_classes // len(MOTIONS)


# ---------------------------------------------------------------------------------------- parameters
def sample_params(n: int, rng: np.random.Generator, num_classes: int = 12, train: bool = True,
                  num_clips: int = 1, frames: int = 8) -> dict[str, np.ndarray]:
    """All randomness of ``n`` samples (balanced labels), as arrays; rendering is a pure function."""
    nc = _num_colours(num_classes)
    labels = rng.permutation(np.arange(n) % num_classes)
    u = rng.random((n, 1)) if train else None
    if u is None:
        u = np.broadcast_to(((np.arange(num_clips) + 0.5) / num_clips)[None], (n, num_clips))
    times = (np.arange(frames)[None, None] + u[..., None]) / frames  # n x clips x T, in [0, 1)
    f = times.shape[1] * frames
    p = {
        "label": labels, "motion": labels // nc, "colour": labels % nc,
        "times": times.reshape(n, f).astype(np.float64),
        "facing": rng.integers(0, 2, (n, 2)),  # 0 = front, 1 = back (actor, idle person)
        "height": rng.uniform(0.42, 0.68, (n, 2)), "foot_y": rng.uniform(0.80, 0.95, (n, 2)),
        "foot_x": rng.uniform(0.30, 0.70, (n, 2)),
        "cycles": rng.uniform(0.7, 1.5, n), "phase": rng.uniform(0, 2 * math.pi, n),
        "amp": rng.uniform(0.8, 1.2, n),
        "sway_phase": rng.uniform(0, 2 * math.pi, (n, 2, 5)), "sway_amp": rng.uniform(0.5, 1.5, (n, 2, 5)),
        "brightness": rng.uniform(0.75, 1.1, n), "grey": rng.uniform(0.35, 0.95, n),
        "second": rng.random(n) < P_SECOND, "actor_slot": rng.integers(0, 2, n),
        "bg_level": rng.uniform(0.2, 0.6, n), "bg_lum": rng.standard_normal((n, 6, 6)),
        "bg_chroma": rng.standard_normal((n, 3, 6, 6)), "noise_idx": rng.integers(0, _BANK, (n, f)),
        "pose_noise": rng.standard_normal((n, 2, f, 17, 2)), "score": rng.uniform(0.55, 1.0, (n, 2, f, 17)),
        "drop": rng.random((n, 2, f, 17)) < 0.03,
    }
    # the idle person stands beside the actor, on whichever side has room
    side = np.where(p["foot_x"][:, 0] < 0.5, 1.0, -1.0)
    p["foot_x"][:, 1] = p["foot_x"][:, 0] + side * rng.uniform(0.28, 0.4, n)
    return p


# ------------------------------------------------------------------------------------------ geometry
# body model (height 1, origin between the feet, y down); "image sides" 0 = left, 1 = right of the image
_SH_Y, _HIP_Y, _SH_X, _HIP_X = -0.80, -0.50, 0.13, 0.085
_UA, _FA, _TH, _SN = 0.16, 0.15, 0.245, 0.245
_HEAD_Y, _HEAD_R = -0.91, 0.07


def _limb(root: np.ndarray, a1: np.ndarray, a2: np.ndarray, l1: float, l2: float, s: float):
    """Two-segment limb from ``root`` with angles from 'straight down', positive = outward."""
    mid = root + l1 * np.stack([s * np.sin(a1), np.cos(a1)], -1)
    end = mid + l2 * np.stack([s * np.sin(a1 + a2), np.cos(a1 + a2)], -1)
    return mid, end


def image_side_joints(p: dict[str, np.ndarray], person: int) -> dict[str, np.ndarray]:
    """Joint positions by image side (n x F x 2 each, normalized frame coordinates): what the
    pixels show. Person 0 is the actor, 1 the idle person."""
    t = p["times"]  # n x F
    n, f = t.shape
    tau = 2 * math.pi
    act = (1 - np.cos(tau * p["cycles"][:, None] * t + p["phase"][:, None])) / 2 * p["amp"][:, None]
    sw = p["sway_amp"][:, person, :, None] * np.sin(tau * 0.5 * t[:, None] + p["sway_phase"][:, person, :, None])
    if person == 1:
        act = np.zeros_like(act)
    # actor: which image side moves = person side XOR facing (front: the person's left is image right)
    motion = p["motion"]
    person_left = (motion % 2 == 0)
    active_side = np.where(person_left, 1 - p["facing"][:, 0], p["facing"][:, 0])
    is_arm, is_leg = motion < 2, motion >= 2
    out: dict[str, np.ndarray] = {}
    dx = 0.02 * sw[:, 4]
    for side, s in ((0, -1.0), (1, 1.0)):
        on = (active_side == side)[:, None] if person == 0 else np.zeros((n, 1), bool)
        ua = 0.15 + 0.05 * sw[:, side] + np.where(on & is_arm[:, None], 2.2 * act, 0.0)
        fa = 0.10 + 0.05 * sw[:, 2] + np.where(on & is_arm[:, None], 0.35 * act, 0.0)
        th = 0.05 + 0.02 * sw[:, 2 + side] + np.where(on & is_leg[:, None], 0.95 * act, 0.0)
        sn = -0.02 + np.where(on & is_leg[:, None], -0.45 * act, 0.0)
        sh = np.stack([s * _SH_X + dx, np.full_like(dx, _SH_Y)], -1)
        hip = np.stack([s * _HIP_X + dx, np.full_like(dx, _HIP_Y)], -1)
        out[f"shoulder{side}"], out[f"hip{side}"] = sh, hip
        out[f"elbow{side}"], out[f"wrist{side}"] = _limb(sh, ua, fa, _UA, _FA, s)
        out[f"knee{side}"], out[f"ankle{side}"] = _limb(hip, th, sn, _TH, _SN, s)
        out[f"eye{side}"] = np.stack([s * 0.025 + dx, np.full_like(dx, -0.925)], -1)
        out[f"ear{side}"] = np.stack([s * 0.055 + dx, np.full_like(dx, -0.91)], -1)
    out["head"] = np.stack([dx, np.full_like(dx, _HEAD_Y)], -1)
    out["nose"] = np.stack([dx, np.full_like(dx, -0.895)], -1)
    h = p["height"][:, person, None, None]
    origin = np.stack([p["foot_x"][:, person], p["foot_y"][:, person]], -1)[:, None]
    if "jitter" in p:  # camera shake (n x F x 2, frame fractions): moves the whole picture per frame
        origin = origin + p["jitter"]
    return {k: origin + h * v for k, v in out.items()}


def coco_pose(p: dict[str, np.ndarray], person: int) -> tuple[np.ndarray, np.ndarray]:
    """COCO-17 keypoints (n x F x 17 x 2, normalized) and scores (n x F x 17) of a person, with
    pose-estimator-like noise, scores and dropped joints."""
    g = image_side_joints(p, person)
    facing = p["facing"][:, person]
    kp = np.zeros(g["head"].shape[:2] + (17, 2))
    kp[:, :, 0] = g["nose"]
    for name, (li, ri) in {"eye": (1, 2), "ear": (3, 4), "shoulder": (5, 6), "elbow": (7, 8), "wrist": (9, 10),
                           "hip": (11, 12), "knee": (13, 14), "ankle": (15, 16)}.items():
        front = (facing == 0)[:, None, None]
        kp[:, :, li] = np.where(front, g[f"{name}1"], g[f"{name}0"])  # the person's left
        kp[:, :, ri] = np.where(front, g[f"{name}0"], g[f"{name}1"])
    kp = kp + 0.006 * p["pose_noise"][:, person]
    score = np.where(p["drop"][:, person], 0.0, p["score"][:, person])
    kp = np.where(score[..., None] > 0, kp, 0.0)
    return kp.astype(np.float32), score.astype(np.float32)


# ----------------------------------------------------------------------------------------- rendering
_SEGMENTS = [("shoulder0", "shoulder1"), ("hip0", "hip1"), ("shoulder0", "hip0"), ("shoulder1", "hip1"),
             ("neck", "head")] + [(a + s, b + s) for s in "01" for a, b in
                                  (("shoulder", "elbow"), ("elbow", "wrist"), ("hip", "knee"), ("knee", "ankle"))]


def _coverage(seg: np.ndarray, width: np.ndarray, head: np.ndarray, radius: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased coverage (F x S x S, [0, 1]) of thick segments (F x G x 2 x 2, pixels) and a disc:
    points along each segment splat onto their 3 x 3 pixel neighbourhood, sums clipped to 1."""
    f, g = seg.shape[:2]
    k = max(6, int(math.ceil(0.2 * size)))  # about one point per pixel of the longest limb
    lin = np.linspace(0, 1, k, dtype=np.float32)[None, None, :]
    seg = seg.astype(np.float32)
    ptx = (seg[:, :, 0, 0, None] + (seg[:, :, 1, 0, None] - seg[:, :, 0, 0, None]) * lin).reshape(f, -1, 1)
    pty = (seg[:, :, 0, 1, None] + (seg[:, :, 1, 1, None] - seg[:, :, 0, 1, None]) * lin).reshape(f, -1, 1)
    ox, oy = (a.reshape(-1).astype(np.float32) for a in np.meshgrid(np.arange(-1, 2), np.arange(-1, 2)))
    px, py = np.floor(ptx) + ox, np.floor(pty) + oy  # F x P x 9
    half = (width.astype(np.float32) / 2 + 0.5)[:, None, None]
    w = np.clip(half - np.sqrt((px + 0.5 - ptx) ** 2 + (py + 0.5 - pty) ** 2), 0, 1)
    # the head: exact disc coverage in a window around its centre
    r = int(math.ceil(float(radius.max()))) + 1
    hx, hy = (a.reshape(-1).astype(np.float32) for a in np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1)))
    cx, cy = head[:, 0, None].astype(np.float32), head[:, 1, None].astype(np.float32)
    hpx, hpy = np.floor(cx) + hx, np.floor(cy) + hy
    hw = np.clip((radius.astype(np.float32) + 0.5)[:, None] - np.sqrt((hpx + 0.5 - cx) ** 2 + (hpy + 0.5 - cy) ** 2),
                 0, 1)
    px = np.concatenate([px.reshape(f, -1), hpx], 1)
    py = np.concatenate([py.reshape(f, -1), hpy], 1)
    w = np.concatenate([w.reshape(f, -1), hw], 1)
    ok = (px >= 0) & (px < size) & (py >= 0) & (py < size) & (w > 0)
    flat = (np.arange(f, dtype=np.float32)[:, None] * size + py) * size + px  # exact below 2**24
    cov = np.bincount(flat[ok].astype(np.int64), weights=w[ok], minlength=f * size * size)
    return np.minimum(cov, 1.0).reshape(f, size, size).astype(np.float32)


def render(p: dict[str, np.ndarray], size: int = 64, chunk: int = 1024) -> np.ndarray:
    """RGB frames (n x 3 x F x S x S uint8) drawn from the image-side geometry only (no joint names)."""
    n, f = p["times"].shape
    bg = torch.from_numpy((p["bg_lum"][:, None] * 0.10 + p["bg_chroma"] * 0.035).astype(np.float32))
    bg = torch.nn.functional.interpolate(bg, size=(size, size), mode="bilinear", align_corners=False)
    bg = (bg.permute(0, 2, 3, 1).numpy() + p["bg_level"][:, None, None, None]).astype(np.float32)
    colours = np.array([c for _, c in PALETTE], dtype=np.float32)
    people = []
    for person in (0, 1):
        g = image_side_joints(p, person)
        g["neck"] = (g["shoulder0"] + g["shoulder1"]) / 2
        seg = np.stack([np.stack([g[a], g[b]], 2) for a, b in _SEGMENTS], 2) * size  # n x F x G x 2 x 2
        hgt = p["height"][:, person] * size
        col = (colours[p["colour"]] * p["brightness"][:, None] if person == 0
               else np.repeat(p["grey"][:, None], 3, 1)).astype(np.float32)
        people.append((seg, np.maximum(1.0, 0.045 * hgt), g["head"] * size, _HEAD_R * hgt, col))
    bank = 0.035 * np.random.default_rng(size).standard_normal((_BANK, size, size, 3), dtype=np.float32)
    out = np.empty((n, 3, f, size, size), dtype=np.uint8)
    per = max(1, min(chunk // f, (1 << 24) // (f * size * size)))
    for s0 in range(0, n, per):
        idx = np.arange(s0, min(n, s0 + per))
        noise = bank[p["noise_idx"][idx]]  # m x F x S x S x 3 per-frame sensor noise
        img = bg[idx, None] + noise
        for person in (1, 0):  # idle person first, the actor on top
            sub = idx[p["second"][idx]] if person == 1 else idx
            if not len(sub):
                continue
            seg, wid, head, rad, col = people[person]
            cov = _coverage(seg[sub].reshape(len(sub) * f, -1, 2, 2), np.repeat(wid[sub], f),
                            head[sub].reshape(-1, 2), np.repeat(rad[sub], f), size)
            fi, y, x = np.nonzero(cov)  # the figure covers few pixels: composite only those
            c = cov[fi, y, x][:, None]
            si, ti = np.searchsorted(idx, sub)[fi // f], fi % f
            pix = img[si, ti, y, x]
            img[si, ti, y, x] = pix + c * (col[sub][fi // f] - pix + noise[si, ti, y, x])
        np.multiply(img, 255, out=img)
        np.add(img, 0.5, out=img)
        np.clip(img, 0, 255, out=img)
        out[idx] = img.astype(np.uint8).transpose(0, 4, 1, 2, 3)
    return out


# ------------------------------------------------------------------------------------------- dataset
def seed_sequence(seed: int, split: str, n: int, *salt: int, round: int = 0) -> np.random.SeedSequence:
    """The entropy of one generated set; ``round`` r > 0 (a training set regenerated for the r-th
    time, ``regenerate_every``) adds a word, so round 0 is the set a run without regeneration sees."""
    words = [int(seed), 0 if split == "train" else 1, int(n), *salt]
    return np.random.SeedSequence(words + ([int(round)] if round else []))


def generate(n: int, seed: int = 0, split: str = "train", frames: int = 8, image_size: int = 64,
             num_classes: int = 12, num_persons: int = 2, num_clips: int = 1, rgb: bool = True,
             params: dict[str, np.ndarray] | None = None, round: int = 0) -> dict[str, Any]:
    """Arrays of a synthetic split: rgb (n x clips x 3 x T x S x S uint8 or None), pose
    (n x clips x M x T x 17 x 3 float32), person_mask (n x clips x M), label (n), params."""
    train = split == "train"
    if params is None:
        rng = np.random.default_rng(seed_sequence(seed, split, n, round=round))
        params = sample_params(n, rng, num_classes, train, num_clips, frames)
    n, f = params["times"].shape
    clips = f // frames
    kps = [coco_pose(params, person) for person in (0, 1)]
    pose = np.zeros((n, num_persons, f, 17, 3), dtype=np.float32)
    mask = np.zeros((n, num_persons), dtype=bool)
    for i in range(n):
        order = [0]
        if params["second"][i] and num_persons > 1:
            order = [0, 1] if params["actor_slot"][i] == 0 else [1, 0]
        for slot, person in enumerate(order):
            pose[i, slot, ..., :2], pose[i, slot, ..., 2] = kps[person][0][i], kps[person][1][i]
            mask[i, slot] = True
    pose = pose.reshape(n, num_persons, clips, frames, 17, 3).transpose(0, 2, 1, 3, 4, 5)
    out = {"pose": np.ascontiguousarray(pose), "person_mask": np.repeat(mask[:, None], clips, 1),
           "label": params["label"].astype(np.int64), "params": params, "rgb": None}
    if rgb:
        img = render(params, image_size).reshape(n, 3, clips, frames, image_size, image_size)
        out["rgb"] = np.ascontiguousarray(img.transpose(0, 2, 1, 3, 4, 5))
    return out


_CACHE: OrderedDict = OrderedDict()


class SyntheticDataset(torch.utils.data.Dataset):
    """In-memory synthetic split (see the module docstring); same item layout as the pyskl dataset."""

    layout = "coco17"
    title = "synthetic"  # names the set in error messages
    min_image_size = 16

    def __init__(self, split: str = "train", train: bool | None = None, modality: str = "rgb+pose",
                 frames: int = 8, image_size: int = 64, seed: int = 0, num_classes: int = 12,
                 num_train: int = 1000, num_test: int = 400, num_persons: int = 2, num_clips: int = 1,
                 feature: str = "joint", regenerate_every: int = 0) -> None:
        from .pipeline import parse_modality
        from .pipeline.feature import check_feature

        self.feature = check_feature(feature)
        if split not in ("train", "test"):
            raise DataError(f"synthetic split must be 'train' or 'test', got {split!r}")
        if isinstance(regenerate_every, bool) or not isinstance(regenerate_every, int) or regenerate_every < 0:
            raise DataError(f"data.regenerate_every must be an integer >= 0 (0 = never), got {regenerate_every!r}")
        self.use_rgb, self.use_pose = parse_modality(modality)
        self.split, self.modality = split, modality
        self.num_clips = 1 if (split == "train" or train) else int(num_clips)
        self.class_names = class_names(num_classes)
        self.num_classes = num_classes
        self.skeleton = COCO17
        n = int(num_train if split == "train" else num_test)
        if n < 1 or frames < 1 or image_size < self.min_image_size or num_persons < 1 or self.num_clips < 1:
            raise DataError(f"{self.title}: counts, frames, num_persons >= 1 and image_size >= "
                            f"{self.min_image_size} required")
        # the test split is one fixed set: only training clips are regenerated
        self.regenerate_every = regenerate_every if split == "train" else 0
        self.round, self.num_skipped = 0, 0
        self._args = (n, int(seed), split, int(frames), int(image_size), num_classes, int(num_persons),
                      self.num_clips)
        self.data = self._load(0)

    def _generate(self, round: int) -> dict[str, Any]:
        n, seed, split, frames, size, num_classes, persons, clips = self._args
        return generate(n, seed, split, frames, size, num_classes, persons, clips, rgb=self.use_rgb, round=round)

    def _load(self, round: int) -> dict[str, Any]:
        """Round 0 is cached per process (train and test sets are built more than once: the model's
        shapes, the loaders, the tests); later rounds are made when an epoch needs them."""
        if round:
            return self._generate(round)
        key = (type(self).__name__, *self._args, self.use_rgb)
        if key not in _CACHE:
            _CACHE[key] = self._generate(0)
            while len(_CACHE) > 4:
                _CACHE.popitem(last=False)
        return _CACHE[key]

    def set_epoch(self, epoch: int) -> None:
        """The training clips of epoch ``epoch`` (0-based): with ``regenerate_every`` K > 0 a fresh
        set every K epochs (round ``epoch // K``), a pure function of the seed and the round, so a
        resumed run sees the clips the uninterrupted run saw and no clip is learned by heart."""
        if self.regenerate_every and epoch // self.regenerate_every != self.round:
            self.round = epoch // self.regenerate_every
            self.data = self._load(self.round)

    def __len__(self) -> int:
        return len(self.data["label"])

    def __getitem__(self, index: int) -> dict[str, Any]:
        d, item = self.data, {}
        single = self.num_clips == 1
        if self.use_rgb:
            rgb = normalize(d["rgb"][index])  # clips x 3 x T x S x S
            item["rgb"] = rgb[0] if single else rgb
        if self.use_pose:
            pose = torch.from_numpy(d["pose"][index])
            if self.feature != "joint":
                from .pipeline.feature import pose_feature

                pose = pose_feature(pose, self.feature, self.layout)
            mask = torch.from_numpy(d["person_mask"][index])
            item["pose"], item["person_mask"] = (pose[0], mask[0]) if single else (pose, mask)
        if d.get("object_track") is not None:  # the objects set's deciding object (synthetic_objects)
            track = torch.from_numpy(d["object_track"][index])
            item["object_track"] = track[0] if single else track
        item["label"] = int(d["label"][index])
        return item
