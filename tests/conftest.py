import os
from pathlib import Path

import pytest

from ablation.data import candidate_dirs

# Tests never rely on a random default thread count: results are compared bit for bit.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")  # headless figures


@pytest.fixture(scope="session")
def sst_dir() -> Path:
    """The real SST trees (../shared/data/sst or another configured copy)."""
    for d in candidate_dirs():
        if all((d / f"{s}.txt").is_file() for s in ("train", "dev", "test")):
            return d
    pytest.skip("no SST copy found (run `ablation data --download`)")
