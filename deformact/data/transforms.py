"""The numeric steps of the clip pipeline (numpy; no torchvision), used by
:mod:`deformact.data.pipeline`.

Geometry is carried as a crop box in normalized frame coordinates ``(x0, y0, x1, y1)`` (0 = left/top
edge, 1 = right/bottom edge of the frame); the same box crops the pixels and renormalizes the
joints, and a flip mirrors both (swapping left/right joints), so they always stay aligned.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .constants import RGB_MEAN, RGB_STD

_PAD_VALUE = round(RGB_MEAN[0] * 255)  # padding becomes ~0 after normalization


def sanitize(kp: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-finite keypoints get score 0 and coordinate 0; scores are clipped to [0, 1]."""
    kp = np.asarray(kp, dtype=np.float32)
    score = np.asarray(score, dtype=np.float32)
    bad = ~np.isfinite(kp).all(-1) | ~np.isfinite(score)
    if bad.any():
        kp = np.where(bad[..., None], 0.0, kp).astype(np.float32)
        score = np.where(bad, 0.0, score).astype(np.float32)
    return kp, np.clip(score, 0.0, 1.0)


def rank_persons(score: np.ndarray, num_persons: int) -> np.ndarray:
    """Indices of up to ``num_persons`` people with the highest total score (M_all x ... scores)."""
    total = score.sum(axis=tuple(range(1, score.ndim)))
    return np.argsort(-total, kind="stable")[:num_persons]


def compact_box(kp: np.ndarray, score: np.ndarray, img_wh: tuple[int, int], padding: float = 0.25,
                min_size: float = 0.1) -> tuple[float, float, float, float]:
    """Square box (in pixels) around all visible joints, enlarged by ``padding`` and at least
    ``min_size`` of the frame's short side; may extend past the frame (padded). Normalized coords.
    Joints in normalized coordinates ``kp`` (... x 2). No joints: the whole frame."""
    w, h = img_wh
    vis = score > 0
    if not vis.any():
        return 0.0, 0.0, 1.0, 1.0
    x = kp[..., 0][vis] * w
    y = kp[..., 1][vis] * h
    x0, x1, y0, y1 = float(x.min()), float(x.max()), float(y.min()), float(y.max())
    side = max(x1 - x0, y1 - y0) * (1 + padding)
    side = max(side, min_size * min(w, h))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (cx - side / 2) / w, (cy - side / 2) / h, (cx + side / 2) / w, (cy + side / 2) / h


def center_box(region: tuple[float, float, float, float],
               img_wh: tuple[int, int]) -> tuple[float, float, float, float]:
    """The largest centred square (in pixels) inside ``region``."""
    w, h = img_wh
    rx0, ry0, rx1, ry1 = region
    side = min((rx1 - rx0) * w, (ry1 - ry0) * h)
    cx, cy = (rx0 + rx1) / 2 * w, (ry0 + ry1) / 2 * h
    return (cx - side / 2) / w, (cy - side / 2) / h, (cx + side / 2) / w, (cy + side / 2) / h


def random_resized_box(region: tuple[float, float, float, float], img_wh: tuple[int, int],
                       rng: np.random.Generator, scale: tuple[float, float] = (0.56, 1.0),
                       ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[float, float, float, float]:
    """torchvision-style RandomResizedCrop box inside ``region``: area fraction in ``scale``, pixel
    aspect w/h in ``ratio`` (log-uniform); falls back to the centred square."""
    w, h = img_wh
    rx0, ry0, rx1, ry1 = region
    rw, rh = (rx1 - rx0) * w, (ry1 - ry0) * h
    area = rw * rh
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        a = area * rng.uniform(*scale)
        r = math.exp(rng.uniform(*log_r))
        cw, ch = math.sqrt(a * r), math.sqrt(a / r)
        if cw <= rw and ch <= rh:
            x0 = rx0 * w + rng.uniform(0, rw - cw)
            y0 = ry0 * h + rng.uniform(0, rh - ch)
            return x0 / w, y0 / h, (x0 + cw) / w, (y0 + ch) / h
    return center_box(region, img_wh)


def crop_pose(kp: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Normalized frame coordinates -> coordinates relative to ``box`` (in place on a float copy)."""
    x0, y0, x1, y1 = box
    # a box that collapsed to a line (one joint, or coordinates so large that float32 padding is
    # lost in rounding) keeps a tiny width instead of dividing by zero
    out = np.empty_like(kp)
    out[..., 0] = (kp[..., 0] - x0) * (1.0 / max(x1 - x0, 1e-6))
    out[..., 1] = (kp[..., 1] - y0) * (1.0 / max(y1 - y0, 1e-6))
    return out


def flip_pose(kp: np.ndarray, score: np.ndarray, flip_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror x (x -> 1 - x) and swap left/right joints (joint axis = -2 of kp, -1 of score)."""
    kp = kp[..., flip_index, :].copy()
    kp[..., 0] = 1.0 - kp[..., 0]
    return kp, score[..., flip_index]


def person_normalize(kp: np.ndarray, score: np.ndarray, img_wh: tuple[int, int]) -> np.ndarray:
    """Pose-only: centre on the box around all visible joints of the clip and scale its longer side
    (in pixels, aspect kept) to 1, so the people span about [0, 1]."""
    w, h = img_wh
    vis = score > 0
    if not vis.any():
        return kp
    x, y = kp[..., 0][vis] * w, kp[..., 1][vis] * h
    cx, cy = (x.min() + x.max()) / 2, (y.min() + y.max()) / 2
    s = max(x.max() - x.min(), y.max() - y.min(), 1e-3 * max(w, h))
    out = np.empty_like(kp)
    out[..., 0] = (kp[..., 0] * w - cx) / s + 0.5
    out[..., 1] = (kp[..., 1] * h - cy) / s + 0.5
    return out


def affine_augment(kp: np.ndarray, rng: np.random.Generator, rotate: float = 0.0, scale: float = 0.0,
                   shift: float = 0.0) -> np.ndarray:
    """Pose-only augmentation about (0.5, 0.5): rotation in +-``rotate`` degrees, scale in
    1 +- ``scale``, shift in +-``shift`` (fraction of the frame)."""
    if not (rotate or scale or shift):
        return kp
    a = math.radians(rng.uniform(-rotate, rotate))
    s = rng.uniform(1 - scale, 1 + scale)
    t = rng.uniform(-shift, shift, size=2)
    c, si = math.cos(a) * s, math.sin(a) * s
    x, y = kp[..., 0] - 0.5, kp[..., 1] - 0.5
    out = np.empty_like(kp)
    out[..., 0] = c * x - si * y + 0.5 + t[0]
    out[..., 1] = si * x + c * y + 0.5 + t[1]
    return out


def decode_plan(box: tuple[float, float, float, float], src_wh: tuple[int, int],
                size: int) -> tuple[tuple[int, int], tuple[int, int, int, int], tuple[float, float, float, float]]:
    """Pick the decode size so that ``box`` covers about ``size`` x ``size`` decoded pixels (swscale
    shrinks while converting, so big frames are never converted at full size; a box smaller than
    ``size`` source pixels is decoded at source size and upscaled after cropping), the box snapped
    to whole decoded pixels, and that snapped box in normalized coordinates (use it for the pose
    too, so joints and pixels agree exactly).
    Returns ((dec_w, dec_h), (px0, py0, px1, py1), snapped_box)."""
    x0, y0, x1, y1 = box
    sw, sh = src_wh
    dw = max(1, min(sw, round(size / (x1 - x0))))
    dh = max(1, min(sh, round(size / (y1 - y0))))
    pw = size if dw == round(size / (x1 - x0)) else max(1, round((x1 - x0) * dw))
    ph = size if dh == round(size / (y1 - y0)) else max(1, round((y1 - y0) * dh))
    px0, py0 = round(x0 * dw), round(y0 * dh)
    return (dw, dh), (px0, py0, px0 + pw, py0 + ph), (px0 / dw, py0 / dh, (px0 + pw) / dw, (py0 + ph) / dh)


def decode_size(box: tuple[float, float, float, float], size: int, src_w: int, src_h: int) -> tuple[int, int]:
    """The decode size (w, h) of :func:`decode_plan`, as a ``size_fn`` for
    :func:`deformact.io.read_clip` (``functools.partial(decode_size, box, size)``)."""
    return decode_plan(box, (src_w, src_h), size)[0]


def crop_frames(frames: np.ndarray, pbox: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Crop N x H x W x 3 uint8 frames to the pixel box (padding outside the frame with the mean
    colour) and resize to ``size`` x ``size`` when the box is not already that size."""
    n, h, w, _ = frames.shape
    px0, py0, px1, py1 = pbox
    bw, bh = px1 - px0, py1 - py0
    if px0 >= 0 and py0 >= 0 and px1 <= w and py1 <= h:
        out = frames[:, py0:py1, px0:px1]
    else:
        out = np.full((n, bh, bw, 3), _PAD_VALUE, dtype=np.uint8)
        sx0, sy0, sx1, sy1 = max(px0, 0), max(py0, 0), min(px1, w), min(py1, h)
        if sx1 > sx0 and sy1 > sy0:
            out[:, sy0 - py0:sy1 - py0, sx0 - px0:sx1 - px0] = frames[:, sy0:sy1, sx0:sx1]
    if (bh, bw) != (size, size):  # uint8 channels-last bilinear: torch's fast SIMD path
        t = torch.from_numpy(np.ascontiguousarray(out)).permute(0, 3, 1, 2)
        t = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                                            antialias=bh > size or bw > size)
        out = t.permute(0, 2, 3, 1).numpy()
    return out


_SCALE = torch.tensor([1.0 / (255.0 * s) for s in RGB_STD]).view(3, 1, 1, 1)
_SHIFT = torch.tensor([m / s for m, s in zip(RGB_MEAN, RGB_STD)]).view(3, 1, 1, 1)


def to_tensor(frames: np.ndarray, flip: bool = False) -> torch.Tensor:
    """T x H x W x 3 uint8 -> normalized float32 3 x T x H x W (mirrored when ``flip``)."""
    t = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)
    if flip:
        t = t.flip(-1)
    out = torch.empty(t.shape, dtype=torch.float32)
    out.copy_(t)  # converts and transposes in one pass
    return out.mul_(_SCALE).sub_(_SHIFT)


_NP_SCALE = _SCALE.numpy()
_NP_SHIFT = _SHIFT.numpy()


def normalize(a: np.ndarray) -> torch.Tensor:
    """uint8 ... x 3 x T x H x W (channels at dim -4) -> normalized float32 tensor of the same shape.
    numpy on purpose: small items should not pay for torch's intra-op threads."""
    out = np.multiply(a, _NP_SCALE, dtype=np.float32)
    out -= _NP_SHIFT
    return torch.from_numpy(out)
