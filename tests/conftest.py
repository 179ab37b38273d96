import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    return Path(os.environ.get("DEFORMACT_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout; skip when absent, fail when REQUIRE_SHARED=1."""
    path = _shared_dir()
    if not ((path / "videos").is_dir() and (path / "label_maps").is_dir()):
        msg = f"../shared not found at {path} (set DEFORMACT_SHARED)"
        if os.environ.get("REQUIRE_SHARED") == "1":
            pytest.fail(msg + " and REQUIRE_SHARED=1")
        pytest.skip(msg)
    return path


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and CI's 2 shared cores are not oversubscribed
    (OpenMP teams stall badly when they are). Used through ``pytestmark``."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def small_video(tmp_path_factory):
    """A 40-frame 456 x 256 H.264 video and random-walk poses of two people (COCO-17) for it."""
    from deformact.tools.data_bench import make_video, random_annotations

    root = tmp_path_factory.mktemp("small_video")
    video = make_video(root / "walk.mp4", num_frames=40)
    (ann,) = random_annotations(1, num_frames=40, img_shape=(256, 456), prefix="walk", seed=3)
    ann["frame_dir"] = "walk"
    return video, ann
