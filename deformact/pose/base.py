"""The pose-estimator interface and a registry of implementations.

An estimator turns one RGB frame into a list of people, each a V x 3 array (x, y in pixels of
that frame, score in [0, 1]) in the COCO-17 joint order (:data:`deformact.data.skeletons.COCO17`).
It may keep state between frames of one video (tracking); :meth:`PoseEstimator.reset` starts a
new video. Plug in your own detector by subclassing and registering it::

    @register_estimator("mine")
    class MyPose(PoseEstimator):
        def __call__(self, frame): return [my_model(frame)]  # list of 17 x 3 arrays

or pass ``--estimator package.module:ClassName`` to ``deformact extract-poses``.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from deformact.data.skeletons import COCO17

_REGISTRY: dict[str, type[PoseEstimator]] = {}


class PoseEstimator(abc.ABC):
    """frame (h x w x 3 RGB uint8) -> list of persons, each V x 3 (x, y pixels, score)."""

    layout: str = COCO17.name
    num_joints: int = COCO17.num_joints

    @abc.abstractmethod
    def __call__(self, frame: np.ndarray) -> list[np.ndarray]: ...

    def reset(self) -> None:  # noqa: B027 (optional hook)
        """Forget tracking state: the next frame starts a new video."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release native resources."""

    def estimate(self, frames: Iterable[np.ndarray]) -> list[list[np.ndarray]]:
        """Run on a whole video: one list of persons per frame."""
        self.reset()
        return list(self.stream(frames))

    def stream(self, frames: Iterable[np.ndarray | None]) -> Iterator[list[np.ndarray] | None]:
        """The persons of every frame of ``frames``, in order: what ``self(frame)`` gives, while
        ``frames`` (a decoder) is read in a thread of its own (:func:`deformact.io.staged.staged`).
        Estimators whose work splits into stages may run them side by side too. A ``None`` in
        ``frames`` is a frame nobody needs estimated (``deformact stream --pose-frames sampled``):
        it gives ``None`` and calls :meth:`skip`."""
        from deformact.io.staged import staged

        return staged(frames, self._estimate_or_skip)

    def _estimate_or_skip(self, frame: np.ndarray | None) -> list[np.ndarray] | None:
        if frame is None:
            self.skip()
            return None
        return self(frame)

    def skip(self) -> None:  # noqa: B027 (optional hook)
        """A frame of the video went by without being estimated (for estimators that count frames)."""

    def __enter__(self) -> PoseEstimator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def register_estimator(name: str) -> Callable[[type[PoseEstimator]], type[PoseEstimator]]:
    """Class decorator adding an estimator to the registry under ``name``."""

    def wrap(cls: type[PoseEstimator]) -> type[PoseEstimator]:
        _REGISTRY[name] = cls
        return cls

    return wrap


def available_estimators() -> list[str]:
    return sorted(_REGISTRY)


def build_estimator(name: str = "mediapipe", **kwargs) -> PoseEstimator:
    """An estimator by registry name, or by import path ``package.module:ClassName``."""
    if ":" in name:
        module, _, attr = name.partition(":")
        cls = getattr(importlib.import_module(module), attr)
    elif name in _REGISTRY:
        cls = _REGISTRY[name]
    else:
        raise ValueError(f"unknown pose estimator {name!r}; known: {', '.join(available_estimators())} "
                         "or package.module:ClassName")
    est = cls(**kwargs)
    if not isinstance(est, PoseEstimator):
        raise TypeError(f"{name} is not a deformact.pose.PoseEstimator")
    return est
