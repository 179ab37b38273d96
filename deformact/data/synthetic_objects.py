"""Synthetic objects set: a small held object and the motion decide the class (docs/DESIGN.md,
"objects benchmark"). Deterministic by seed, generated in memory.

The stick figures and their motions are those of :mod:`deformact.data.synthetic` (raise the left /
right arm, kick the left / right leg, facing the camera or turning the back with probability 1/2
each), drawn at 16 frames x 112² over a cluttered, textured background (low-frequency colour noise,
a stripe texture, 10 grey-ish rectangles, sensor noise) with camera shake (a smooth random walk of
up to 3 % of the frame side per axis that moves background, people and objects alike, and the
poses with them). Classes are ``motion x held object`` (label = motion * 3 + object):

* the actor holds a small object (9-10 % of the frame side: a red disc, a blue square or a
  yellow cross) in the hand on the side of the moving limb;
* two distractor objects, the two other kinds, lie elsewhere in the scene (one of them, when the
  second, idle person is present (probability 1/2), in that person's hand), so that **every object
  kind appears exactly once in every clip**: which kinds are visible says nothing about the class;
  only the object *at the actor's hand* does.

Bayes ceilings (top-1) follow by construction: **pose-only = 1/3** (for fixed nuisances the poses
are identical whatever the objects: the pose cannot see them), **RGB-only = 1/2** (a left-limb
motion seen from the front renders exactly the pixels of the right-limb motion seen from the back,
held object included: the pixels name the object and arm/leg, not the side), **both = 1** up to
noise. ``tests/test_synthetic_objects.py`` checks both identities and probes the ceilings.

Each item also carries ``object_track`` (T x 3: the held object's centre x, y and radius as
fractions of the frame side, per frame; clips x T x 3 for multi-clip items), which the model never
sees: ``deformact test`` scores with it how close the 3DTS points come to the deciding object.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from deformact.errors import DataError

from . import synthetic as syn

OBJECTS = (("disc", (0.92, 0.12, 0.10)), ("square", (0.12, 0.30, 0.98)), ("cross", (0.98, 0.86, 0.10)))
NUM_CLASSES = len(syn.MOTIONS) * len(OBJECTS)
NUM_DISTRACTORS = 2  # the two other kinds: with the held one, every kind appears once
P_SECOND = 0.5
OBJECT_RADIUS = (0.045, 0.05)  # half the object's extent, in frame sides (extent < 10 %)
_CLUTTER = 10
_BANK = 256


def class_names() -> list[str]:
    """``<motion>_<object>`` for label = motion * 3 + object."""
    return [f"{m}_{o}" for m in syn.MOTIONS for o, _ in OBJECTS]


def sample_params(n: int, rng: np.random.Generator, train: bool = True, num_clips: int = 1,
                  frames: int = 16) -> dict[str, np.ndarray]:
    """All randomness of ``n`` samples (balanced labels); rendering is a pure function of it."""
    p = syn.sample_params(n, rng, NUM_CLASSES, train, num_clips, frames)
    p["object"] = p.pop("colour")  # label = motion * 3 + object, as the demo's motion x colour
    f = p["times"].shape[1]
    p["second"] = rng.random(n) < P_SECOND
    walk = np.cumsum(rng.normal(0, 0.006, (n, f, 2)), 1)
    p["jitter"] = np.clip(walk - walk.mean(1, keepdims=True), -0.03, 0.03)
    p["radius"] = rng.uniform(*OBJECT_RADIUS, (n, 1 + NUM_DISTRACTORS))
    p["obj_bright"] = rng.uniform(0.85, 1.05, (n, 1 + NUM_DISTRACTORS))
    others = np.stack([(p["object"] + 1) % 3, (p["object"] + 2) % 3], 1)
    p["distractor_kind"] = rng.permuted(others, axis=1)
    p["idle_hand"] = rng.integers(0, 2, n)  # image side of the idle person's holding hand
    p["candidates"] = rng.uniform(0.07, 0.93, (n, NUM_DISTRACTORS, 48, 2))
    p["figure_col"] = np.clip(rng.uniform(0.6, 0.95, (n, 2, 1)) + 0.06 * rng.standard_normal((n, 2, 3)), 0, 1)
    p["clutter_box"] = rng.uniform(0, 1, (n, _CLUTTER, 4))
    p["clutter_col"] = np.clip(rng.uniform(0.15, 0.75, (n, _CLUTTER, 1))
                               + 0.08 * rng.standard_normal((n, _CLUTTER, 3)), 0, 1)
    p["stripes"] = np.concatenate([rng.uniform(-1, 1, (n, 2)) * 0.9, rng.uniform(0, 2 * math.pi, (n, 1))], 1)
    return p


def _hand(g: dict[str, np.ndarray], side: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Where a hand holds an object: just beyond the wrist of image side ``side`` (n), n x F x 2."""
    s = side[:, None, None].astype(bool)
    wrist, elbow = np.where(s, g["wrist1"], g["wrist0"]), np.where(s, g["elbow1"], g["elbow0"])
    d = wrist - elbow
    d = d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-6)
    return wrist + 0.8 * radius[:, None, None] * d


def object_tracks(p: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Centres of all objects (n x (1 + distractors) x F x 2, frame fractions, camera shake
    included) and their kinds (n x (1 + distractors)); object 0 is the held, deciding one."""
    g0, g1 = syn.image_side_joints(p, 0), syn.image_side_joints(p, 1)
    motion, facing = p["motion"], p["facing"][:, 0]
    active = np.where(motion % 2 == 0, 1 - facing, facing)  # image side of the moving limb
    held = _hand(g0, active, p["radius"][:, 0])
    n, f = held.shape[:2]
    pos = np.zeros((n, 1 + NUM_DISTRACTORS, f, 2))
    pos[:, 0] = held
    chosen = [held - p["jitter"]]  # scene coordinates (no shake), n x F x 2
    for k in range(NUM_DISTRACTORS):
        cand = p["candidates"][:, k]  # n x C x 2
        ok = np.ones(cand.shape[:2], bool)
        for j, track in enumerate(chosen):
            near = 0.16 if j == 0 else 0.1
            dist = np.linalg.norm(cand[:, :, None] - track[:, None], axis=-1).min(-1)
            ok &= dist > near
        pick = cand[np.arange(n), ok.argmax(1)]  # the first candidate far enough (else the first)
        chosen.append(np.repeat(pick[:, None], f, 1))
        pos[:, 1 + k] = chosen[-1] + p["jitter"]
    idle = _hand(g1, p["idle_hand"], p["radius"][:, 1])
    pos[:, 1] = np.where(p["second"][:, None, None], idle, pos[:, 1])
    kinds = np.concatenate([p["object"][:, None], p["distractor_kind"][:, :NUM_DISTRACTORS]], 1)
    return pos, kinds


def _object_coverage(kind: np.ndarray, cx: np.ndarray, cy: np.ndarray, r: np.ndarray, size: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Anti-aliased coverage of m objects (pixel centres and radii): per object a window of
    pixels, as (flat pixel index within its frame, weight, inside) arrays of shape m x W²."""
    half = int(math.ceil(float(r.max()))) + 2
    ox, oy = (a.reshape(-1) for a in np.meshgrid(np.arange(-half, half + 1), np.arange(-half, half + 1)))
    px, py = np.floor(cx)[:, None] + ox, np.floor(cy)[:, None] + oy
    dx, dy = np.abs(px + 0.5 - cx[:, None]), np.abs(py + 0.5 - cy[:, None])
    rr = r[:, None] + 0.5
    disc = np.clip(rr - np.sqrt(dx ** 2 + dy ** 2), 0, 1)
    sq = np.clip(0.85 * r[:, None] + 0.5 - dx, 0, 1) * np.clip(0.85 * r[:, None] + 0.5 - dy, 0, 1)
    arm = 0.38 * r[:, None] + 0.5
    cross = np.maximum(np.clip(rr - dx, 0, 1) * np.clip(arm - dy, 0, 1),
                       np.clip(rr - dy, 0, 1) * np.clip(arm - dx, 0, 1))
    w = np.where(kind[:, None] == 0, disc, np.where(kind[:, None] == 1, sq, cross))
    inside = (px >= 0) & (px < size) & (py >= 0) & (py < size) & (w > 0)
    return (py * size + px).astype(np.int64), w.astype(np.float32), inside


def _background(p: dict[str, np.ndarray], idx: np.ndarray, size: int, pad: int) -> np.ndarray:
    """Cluttered textured backgrounds of samples ``idx`` on a (size + 2 pad)² canvas, m x S' x S' x 3."""
    big = size + 2 * pad
    low = torch.from_numpy((p["bg_lum"][idx, None] * 0.10 + p["bg_chroma"][idx] * 0.05).astype(np.float32))
    bg = torch.nn.functional.interpolate(low, size=(big, big), mode="bilinear", align_corners=False)
    bg = bg.permute(0, 2, 3, 1).numpy() + p["bg_level"][idx, None, None, None].astype(np.float32)
    u = np.linspace(0, 1, big, dtype=np.float32)
    kx, ky, ph = (p["stripes"][idx, i, None, None].astype(np.float32) for i in range(3))
    bg = bg + 0.05 * np.sin(2 * math.pi * 12 * (kx * u[None, None] + ky * u[None, :, None]) + ph)[..., None]
    box = p["clutter_box"][idx]  # m x K x 4: x0, y0, w, h fractions
    x0, y0 = box[..., 0] * big, box[..., 1] * big
    x1, y1 = x0 + (0.05 + 0.25 * box[..., 2]) * big, y0 + (0.05 + 0.25 * box[..., 3]) * big
    grid = np.arange(big) + 0.5
    for k in range(_CLUTTER):
        inx = (grid[None] >= x0[:, k, None]) & (grid[None] < x1[:, k, None])  # m x S'
        iny = (grid[None] >= y0[:, k, None]) & (grid[None] < y1[:, k, None])
        mask = (iny[:, :, None] & inx[:, None, :])[..., None]
        bg = np.where(mask, p["clutter_col"][idx, k, None, None].astype(np.float32), bg)
    return bg.astype(np.float32)


def _draw_object(img: np.ndarray, local: np.ndarray, idx: np.ndarray, k: int, pos: np.ndarray, kinds: np.ndarray,
                 p: dict[str, np.ndarray], colours: np.ndarray, size: int) -> None:
    """Draw object slot ``k`` of the chunk's samples ``local`` (chunk rows; ``idx`` maps them to
    samples) into ``img`` (m x F x S² x 3) in place."""
    if not len(local):
        return
    g, f = idx[local], img.shape[1]
    c = pos[g, k].reshape(-1, 2) * size
    kind = np.repeat(kinds[g, k], f)
    col = colours[kind] * np.repeat(p["obj_bright"][g, k], f)[:, None].astype(np.float32)
    pix, w, inside = _object_coverage(kind, c[:, 0], c[:, 1], np.repeat(p["radius"][g, k] * size, f), size)
    frames = (local[:, None] * f + np.arange(f)).reshape(-1)
    rows = np.broadcast_to(frames[:, None], pix.shape)[inside]
    flat = img.reshape(-1, img.shape[2], 3)  # a view: img is contiguous
    pix, c = pix[inside], w[inside][:, None]
    col = np.broadcast_to(col[:, None], w.shape + (3,))[inside]
    flat[rows, pix] += c * (col - flat[rows, pix])


def render(p: dict[str, np.ndarray], size: int = 112, chunk: int = 8) -> np.ndarray:
    """RGB frames (n x 3 x F x S x S uint8) from the image-side geometry only (no joint names)."""
    n, f = p["times"].shape
    pad = int(math.ceil(0.03 * size)) + 1
    pos, kinds = object_tracks(p)
    colours = np.array([c for _, c in OBJECTS], np.float32)
    people = []
    for person in (0, 1):
        g = syn.image_side_joints(p, person)
        g["neck"] = (g["shoulder0"] + g["shoulder1"]) / 2
        seg = np.stack([np.stack([g[a], g[b]], 2) for a, b in syn._SEGMENTS], 2) * size
        hgt = p["height"][:, person] * size
        people.append((seg, np.maximum(1.0, 0.045 * hgt), g["head"] * size, syn._HEAD_R * hgt))
    bank = 0.03 * np.random.default_rng(size + 1).standard_normal((_BANK, size, size, 3), dtype=np.float32)
    shift = np.rint(p["jitter"] * size).astype(np.int64)  # the background moves by whole pixels
    out = np.empty((n, 3, f, size, size), dtype=np.uint8)
    for s0 in range(0, n, chunk):
        idx = np.arange(s0, min(n, s0 + chunk))
        m = len(idx)
        bg = _background(p, idx, size, pad)
        img = bank[p["noise_idx"][idx]]  # m x F x S x S x 3: sensor noise, then the shaken background
        for i in range(m):
            for t in range(f):
                y0, x0 = pad - shift[idx[i], t, 1], pad - shift[idx[i], t, 0]
                img[i, t] += bg[i, y0:y0 + size, x0:x0 + size]
        img = img.reshape(m, f, size * size, 3)
        idle = np.nonzero(p["second"][idx])[0]
        alone = np.nonzero(~p["second"][idx])[0]
        everyone = np.arange(m)
        for k in range(2, 1 + NUM_DISTRACTORS):  # lying in the scene
            _draw_object(img, everyone, idx, k, pos, kinds, p, colours, size)
        _draw_object(img, alone, idx, 1, pos, kinds, p, colours, size)  # no idle person to hold it
        for person, sub in ((1, idle), (0, everyone)):  # the idle person behind the actor
            if not len(sub):
                continue
            seg, wid, head, rad = people[person]
            g = idx[sub]
            cov = syn._coverage(seg[g].reshape(len(g) * f, -1, 2, 2), np.repeat(wid[g], f),
                                head[g].reshape(-1, 2), np.repeat(rad[g], f), size).reshape(len(g), f, -1)
            si, fi, pix = np.nonzero(cov)
            col = p["figure_col"][g, person][si]
            dst = img[sub[si], fi, pix]
            img[sub[si], fi, pix] = dst + cov[si, fi, pix][:, None] * (col - dst)
        _draw_object(img, idle, idx, 1, pos, kinds, p, colours, size)  # in the idle person's hand
        _draw_object(img, everyone, idx, 0, pos, kinds, p, colours, size)  # the held, deciding one
        np.multiply(img, 255, out=img)
        np.add(img, 0.5, out=img)
        np.clip(img, 0, 255, out=img)
        img = img.astype(np.uint8).reshape(m, f, size, size, 3)
        out[idx] = img.transpose(0, 4, 1, 2, 3)
    return out


# ------------------------------------------------------------------------------------------- dataset
def generate(n: int, seed: int = 0, split: str = "train", frames: int = 16, image_size: int = 112,
             num_persons: int = 2, num_clips: int = 1, rgb: bool = True,
             params: dict[str, np.ndarray] | None = None, round: int = 0) -> dict[str, Any]:
    """Arrays of a split: rgb (n x clips x 3 x T x S x S uint8 or None), pose (n x clips x M x T x
    17 x 3), person_mask (n x clips x M), label (n), object_track (n x clips x T x 3), params."""
    train = split == "train"
    if params is None:
        rng = np.random.default_rng(syn.seed_sequence(seed, split, n, 7, round=round))
        params = sample_params(n, rng, train, num_clips, frames)
    d = syn.generate(n, seed, split, frames, image_size, NUM_CLASSES, num_persons, num_clips, rgb=False,
                     params=params)
    n, f = params["times"].shape
    clips = f // frames
    held = object_tracks(params)[0][:, 0]  # n x F x 2
    r = np.broadcast_to(params["radius"][:, :1, None], (n, f, 1))
    d["object_track"] = np.concatenate([held, r], -1).astype(np.float32).reshape(n, clips, frames, 3)
    if rgb:
        img = render(params, image_size).reshape(n, 3, clips, frames, image_size, image_size)
        d["rgb"] = np.ascontiguousarray(img.transpose(0, 2, 1, 3, 4, 5))
    return d


def label_parts() -> dict[str, np.ndarray]:
    """The two halves of a label (label = motion * 3 + object), each as a class -> part map."""
    labels = np.arange(NUM_CLASSES)
    return {"motion": labels // len(OBJECTS), "object": labels % len(OBJECTS)}


class SyntheticObjectsDataset(syn.SyntheticDataset):
    """In-memory split of the objects set (module docstring); items as the pyskl dataset's plus
    ``object_track`` (T x 3, ignored by the model); items are read as the demo set's."""

    title, min_image_size = "synthetic objects", 32

    def __init__(self, *, frames: int = 16, image_size: int = 112, num_classes: int = NUM_CLASSES,
                 **kwargs: Any) -> None:
        """The keywords of :class:`deformact.data.synthetic.SyntheticDataset`; 16 frames at 112² by
        default, and always the 12 classes of :func:`class_names`."""
        if num_classes != NUM_CLASSES:
            raise DataError(f"the synthetic objects set has {NUM_CLASSES} classes, got num_classes={num_classes}")
        super().__init__(frames=frames, image_size=image_size, num_classes=NUM_CLASSES, **kwargs)
        self.class_names = class_names()

    def _generate(self, round: int) -> dict[str, Any]:
        n, seed, split, frames, size, _, persons, clips = self._args
        return generate(n, seed, split, frames, size, persons, clips, rgb=self.use_rgb, round=round)

    def label_parts(self) -> dict[str, np.ndarray]:
        """:func:`label_parts`: ``deformact test`` scores the halves apart (``motion_acc``,
        ``object_acc``), so a model that has the motion but guesses the object shows it."""
        return label_parts()

    def object_tracks(self) -> np.ndarray:
        """The deciding object of every item: n x clips x T x 3 (x, y, radius; frame fractions)."""
        return self.data["object_track"]


def object_distances(points: torch.Tensor, track: torch.Tensor) -> torch.Tensor:
    """How far 3DTS points lie from the deciding object: ``points`` B x ... x 3 ((t, y, x) clip
    fractions, e.g. one block's ``sampling_locations``), ``track`` B x T x 3 (x, y, radius per
    frame) -> B x ..., the distance to the object's centre in the frame each point's time falls in,
    in object radii; NaN for a NaN point (a masked joint anchor)."""
    b, t = track.shape[:2]
    flat = points.reshape(b, -1, 3).float()
    frame = (flat[..., 0].nan_to_num(0.0) * t).floor().clamp(0, t - 1).long()  # B x P
    obj = track.float().gather(1, frame[..., None].expand(-1, -1, 3))  # B x P x 3
    dist = torch.hypot(flat[..., 2] - obj[..., 0], flat[..., 1] - obj[..., 1]) / obj[..., 2]
    return dist.reshape(points.shape[:-1])


def localisation_hits(points: torch.Tensor, track: torch.Tensor, radii: float = 1.5) -> torch.Tensor:
    """Which 3DTS points lie within ``radii`` object radii of the deciding object
    (:func:`object_distances`) -> bool B x .... A NaN point (a masked joint anchor) is never a
    hit; count the finite points for the fraction."""
    return object_distances(points, track) <= radii


def localisation(points: torch.Tensor, weights: torch.Tensor, track: torch.Tensor,
                 radii: float = 1.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per item, for one block's 3DTS points ``points`` B x G x P x 3 and the CM attention of their
    keys ``weights`` B x P (``sampling_locations`` / ``sampling_weights``): (points near the object,
    points read (NaN ones are masked anchors), attention on the near points, a key's weight split
    evenly over its G points), each a tensor of B."""
    near = localisation_hits(points, track, radii)  # B x G x P
    read = points.isfinite().all(-1).flatten(1).sum(1)
    attended = (weights.float() * near.float().mean(1)).sum(-1)
    return near.flatten(1).sum(1), read, attended
