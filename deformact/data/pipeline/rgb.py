"""RGB transforms: decode the sampled frames at the size the crop needs, crop, pack.

swscale resizes while converting, so a 1080p frame is never converted at full size: the decode
size is chosen so that the crop box covers about ``image_size`` decoded pixels
(:func:`deformact.data.transforms.decode_plan`), and the box is snapped to whole decoded pixels,
which the pose then uses too (joints and pixels agree exactly).
"""

from __future__ import annotations

import functools
from typing import Any

from deformact.errors import DataError

from .. import transforms as tf
from .base import Transform


class DecodeRGB(Transform):
    """The frames ``frame_inds`` of ``filename`` (a video or a frame folder), decoded at the size
    that gives the crop box about ``image_size`` pixels; the box snapped to decoded pixels.
    With ``check`` (default) the video must fit its annotation first: frame count (``frame_count``
    of :class:`SampleFrames`: the keypoints' T, else ``total_frames``) and frame size
    (``img_shape``) within the tolerances of :func:`deformact.data.checks.check_media`, else a
    :class:`deformact.errors.VideoError`.

    Reads: filename, frame_inds, crop_box, frame_count, img_shape, original_shape.
    Writes: imgs, img_pbox, crop_box.
    """

    reads = ("filename", "frame_inds", "crop_box", "frame_count", "img_shape", "original_shape")
    writes = ("imgs", "img_pbox", "crop_box")

    def __init__(self, *, image_size: int = 224, threads: int = 1, check: bool = True) -> None:
        self.image_size, self.threads, self.check = int(image_size), int(threads), bool(check)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        from deformact.io.video_read import read_clip

        from ..checks import check_media

        if results.get("filename") is None:
            raise DataError(f"{results.get('frame_dir', 'annotation')}: the modality needs RGB but no "
                            "'filename' (video or frame folder) was given")
        if self.check:
            frames = results.get("frame_count")
            shape = results.get("img_shape", results.get("original_shape"))
            check_media(results["filename"], int(frames) if frames else None, shape)
        box = results["crop_box"]
        size_fn = functools.partial(tf.decode_size, box, self.image_size)
        frames, src = read_clip(results["filename"], results["frame_inds"], size_fn, self.threads)
        _, pbox, snapped = tf.decode_plan(box, src, self.image_size)
        results.update(imgs=frames, img_pbox=pbox, crop_box=snapped)
        return results


class CropRGB(Transform):
    """The pixel box of every frame (mean colour outside the frame), resized to ``image_size``
    squared when it is not that size already.

    Reads: imgs, img_pbox. Writes: imgs.
    """

    reads = ("imgs", "img_pbox")
    writes = ("imgs",)

    def __init__(self, *, image_size: int = 224) -> None:
        self.image_size = int(image_size)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        results["imgs"] = tf.crop_frames(results["imgs"], results["img_pbox"], self.image_size)
        return results


class PackRGB(Transform):
    """uint8 N x S x S x 3 frames -> the normalized float32 RGB input 3 x T x S x S
    (N x 3 x T x S x S with ``num_clips`` N > 1), mirrored left to right when ``flip`` is set.

    Reads: imgs, flip, clip_len, num_clips. Writes: rgb.
    """

    reads = ("imgs", "flip", "clip_len", "num_clips")
    writes = ("rgb",)

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        imgs = results["imgs"]
        n_clip, t = results["num_clips"], results["clip_len"]
        rgb = tf.to_tensor(imgs, flip=bool(results.get("flip")))  # 3 x (N*T) x S x S
        if n_clip > 1:
            rgb = rgb.view(3, n_clip, t, *rgb.shape[-2:]).transpose(0, 1).contiguous()
        results["rgb"] = rgb
        return results
