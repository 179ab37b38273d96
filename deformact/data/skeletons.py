"""Skeleton layouts: joint names, drawing edges and left/right flip pairs (COCO-17, NTU-25, Penn-13)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from deformact.errors import DataError


@dataclass(frozen=True)
class Skeleton:
    """A joint layout. ``edges`` are (parent, child) index pairs for drawing; ``flip_pairs`` are
    (left, right) joint index pairs swapped by a horizontal flip ("left" = the person's left)."""

    name: str
    joints: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    flip_index: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        idx = np.arange(len(self.joints))
        for a, b in self.flip_pairs:
            idx[a], idx[b] = b, a
        object.__setattr__(self, "flip_index", idx)

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def left(self) -> tuple[int, ...]:
        return tuple(a for a, _ in self.flip_pairs)

    @property
    def right(self) -> tuple[int, ...]:
        return tuple(b for _, b in self.flip_pairs)


COCO17 = Skeleton(
    "coco17",
    ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
     "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
     "right_knee", "left_ankle", "right_ankle"),
    edges=((0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10), (5, 11), (6, 12),
           (11, 12), (11, 13), (13, 15), (12, 14), (14, 16)),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
)

# Kinect v2 order of NTU RGB+D (0-based); edges as in pyskl's 'nturgb+d' graph
NTU25 = Skeleton(
    "ntu25",
    ("spine_base", "spine_mid", "neck", "head", "left_shoulder", "left_elbow", "left_wrist", "left_hand",
     "right_shoulder", "right_elbow", "right_wrist", "right_hand", "left_hip", "left_knee", "left_ankle",
     "left_foot", "right_hip", "right_knee", "right_ankle", "right_foot", "spine_shoulder",
     "left_hand_tip", "left_thumb", "right_hand_tip", "right_thumb"),
    edges=((0, 1), (1, 20), (2, 20), (3, 2), (4, 20), (5, 4), (6, 5), (7, 6), (8, 20), (9, 8), (10, 9),
           (11, 10), (12, 0), (13, 12), (14, 13), (15, 14), (16, 0), (17, 16), (18, 17), (19, 18),
           (21, 22), (22, 7), (23, 24), (24, 11)),
    flip_pairs=((4, 8), (5, 9), (6, 10), (7, 11), (12, 16), (13, 17), (14, 18), (15, 19), (21, 23),
                (22, 24)),
)

# Penn Action joint order (labels/*.mat)
PENN13 = Skeleton(
    "penn13",
    ("head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
     "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"),
    edges=((0, 1), (0, 2), (1, 2), (1, 3), (3, 5), (2, 4), (4, 6), (1, 7), (2, 8), (7, 8), (7, 9),
           (9, 11), (8, 10), (10, 12)),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12)),
)

SKELETONS: dict[str, Skeleton] = {s.name: s for s in (COCO17, NTU25, PENN13)}


def get_skeleton(layout: str | None = None, num_joints: int | None = None) -> Skeleton:
    """The layout by name, or inferred from the joint count V (17, 25, 13); checks V against the layout."""
    if layout is None:
        by_v = {s.num_joints: s for s in SKELETONS.values()}
        if num_joints not in by_v:
            raise DataError(f"cannot infer a skeleton layout from {num_joints} joints; known: "
                            + ", ".join(f"{s.name} (V={s.num_joints})" for s in SKELETONS.values()))
        return by_v[num_joints]
    if layout not in SKELETONS:
        raise DataError(f"unknown skeleton layout {layout!r}; known: {', '.join(SKELETONS)}")
    skel = SKELETONS[layout]
    if num_joints is not None and num_joints != skel.num_joints:
        raise DataError(f"layout {layout} has {skel.num_joints} joints, data has {num_joints}")
    return skel


# Joints of one layout that another names differently or lacks, as the mean of joints it has:
# Penn Action's head is COCO's nose; Kinect's spine, neck,
# hands and feet are midpoints or the nearest COCO joint (wrist, ankle). Scores take the minimum.
JOINT_SOURCES: dict[str, tuple[tuple[str, ...], ...]] = {
    "head": (("nose",),),
    "nose": (("head",),),
    "spine_base": (("left_hip", "right_hip"),),
    "spine_mid": (("left_shoulder", "right_shoulder", "left_hip", "right_hip"),),
    "spine_shoulder": (("left_shoulder", "right_shoulder"),),
    "neck": (("left_shoulder", "right_shoulder"),),
    **{f"{side}_{part}": ((f"{side}_wrist",),) for side in ("left", "right") for part in ("hand", "hand_tip", "thumb")},
    **{f"{side}_wrist": ((f"{side}_hand",),) for side in ("left", "right")},
    **{f"{side}_foot": ((f"{side}_ankle",),) for side in ("left", "right")},
}


def joint_mapping(src: Skeleton, dst: Skeleton) -> list[tuple[int, ...]]:
    """For every joint of ``dst``, the ``src`` joint indices whose mean gives it: the joint of the
    same name, else the first :data:`JOINT_SOURCES` entry whose joints ``src`` all has. A ``dst``
    joint with neither is a :class:`DataError` naming the joints that cannot be mapped."""
    index = {name: i for i, name in enumerate(src.joints)}
    out: list[tuple[int, ...]] = []
    missing: list[str] = []
    for name in dst.joints:
        if name in index:
            out.append((index[name],))
            continue
        options = [opt for opt in JOINT_SOURCES.get(name, ()) if all(j in index for j in opt)]
        if options:
            out.append(tuple(index[j] for j in options[0]))
        else:
            missing.append(name)
    if missing:
        raise DataError(f"cannot map {src.name} poses to the {dst.name} layout: no {src.name} joint for "
                        f"{', '.join(missing)}")
    return out


def map_joints(keypoint: np.ndarray, score: np.ndarray, src: Skeleton, dst: Skeleton
               ) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints ... x V_src x C and scores ... x V_src in the ``dst`` layout (see :func:`joint_mapping`):
    a joint made of several is their mean, scored by the least confident of them."""
    kp, sc = np.asarray(keypoint, np.float32), np.asarray(score, np.float32)
    if kp.shape[-2] != src.num_joints or sc.shape[-1] != src.num_joints:
        raise DataError(f"poses have {kp.shape[-2]} joints, the {src.name} layout {src.num_joints}")
    if src == dst:
        return kp, sc
    mapping = joint_mapping(src, dst)
    out_kp = np.stack([kp[..., list(ids), :].mean(-2) for ids in mapping], -2)
    out_sc = np.stack([sc[..., list(ids)].min(-1) for ids in mapping], -1)
    return out_kp, out_sc
