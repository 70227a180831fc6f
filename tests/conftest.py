"""Shared test fixtures: paths to the real test data, tiny configs."""
from __future__ import annotations

from pathlib import Path

import pytest

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"


@pytest.fixture(scope="session")
def testdata() -> Path:
    """The folder of small real histology files; tests using it skip when it is absent."""
    if not TESTDATA.is_dir():
        pytest.skip(f"real test data folder {TESTDATA} is absent (it lives beside the repository as shared/testdata)")
    return TESTDATA
