import os
from pathlib import Path

import pytest

from ablation.training import numerics

# Tests train as the command line does: portable numerics, set before torch is imported (one
# thread among them: results are compared bit for bit).
numerics.request("portable")

from ablation.tasks.sst import candidate_dirs  # noqa: E402  (imports torch)

os.environ.setdefault("MPLBACKEND", "Agg")  # headless figures


@pytest.fixture(scope="session")
def sst_dir() -> Path:
    """The real SST trees (../shared/data/sst or another configured copy)."""
    for d in candidate_dirs():
        if all((d / f"{s}.txt").is_file() for s in ("train", "dev", "test")):
            return d
    pytest.skip("no SST copy found (run `ablation data --download`)")
