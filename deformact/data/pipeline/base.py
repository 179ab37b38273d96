"""The transform contract and :class:`Compose`, in the manner of pyskl's ``Compose([...])``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar


class Transform:
    """One step of a clip pipeline: ``__call__(results) -> results``.

    ``reads`` / ``writes`` name the ``results`` keys a transform uses (also written in its
    docstring as "Reads: ... Writes: ..."); randomness comes only from ``results["rng"]`` (a
    ``numpy.random.Generator`` at training time, None or absent at test time), so a pipeline
    holds no random state and its draws follow the order of the transforms. A transform never
    changes an array it read in place: it writes a new one under the key.
    """

    reads: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...]] = ()

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Compose:
    """Transforms applied in order to a shallow copy of the input dict (the annotation a dataset
    keeps is never modified). The last transform usually packs the model inputs
    (:class:`deformact.data.pipeline.Collect`)."""

    def __init__(self, transforms: Iterable[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, results: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(results)
        for t in self.transforms:
            out = t(out)
        return out

    def run(self, results: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(output, state): the output of ``self(results)`` and the dict the last transform got,
        with every key written on the way (``frame_inds``, ``rank``, ``crop_box``...), e.g. to show
        which frames and people a prediction used."""
        state = dict(results)
        for t in self.transforms[:-1]:
            state = t(state)
        return (self.transforms[-1](dict(state)) if self.transforms else state), state

    def __repr__(self) -> str:
        return "Compose([\n" + "".join(f"    {t!r},\n" for t in self.transforms) + "])"


def image_wh(results: Mapping[str, Any]) -> tuple[int, int] | None:
    """(w, h) of the annotation's frame: ``img_shape`` (h, w), else ``original_shape``; None if neither."""
    shape = results.get("img_shape", results.get("original_shape"))
    if shape is None:
        return None
    h, w = (int(s) for s in tuple(shape)[:2])
    return w, h
