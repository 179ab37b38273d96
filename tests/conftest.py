import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    return Path(os.environ.get("DEFORMACT_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout; skip when absent, fail when REQUIRE_SHARED=1."""
    path = _shared_dir()
    if not (path / "design" / "ARCHITECTURE.md").exists():
        msg = f"../shared not found at {path} (set DEFORMACT_SHARED)"
        if os.environ.get("REQUIRE_SHARED") == "1":
            pytest.fail(msg + " and REQUIRE_SHARED=1")
        pytest.skip(msg)
    return path
