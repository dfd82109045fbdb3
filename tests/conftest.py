"""Shared fixtures: where the third-party conformance files live (../shared/conformance)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE_DIR = REPO_ROOT.parent / "shared" / "conformance"


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    """The folder of public third-party models and schemas; the suite requires it."""
    if not CONFORMANCE_DIR.is_dir():
        raise RuntimeError(f"conformance files not found at {CONFORMANCE_DIR}: check out ../shared")
    return CONFORMANCE_DIR
