"""The notebook runs top to bottom against a small results directory the test makes."""

import os

import pytest

from ablation.core.config import load_experiment
from ablation.running.grid import run_grid


@pytest.mark.slow
def test_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    results = tmp_path / "lecture"
    run_grid(load_experiment("experiments/smoke.toml"), results, workers=1)
    monkeypatch.setenv("ABLATION_RESULTS", str(results))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel uses its inline backend
    nb = nbformat.read("notebooks/lecture_table.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": "notebooks"}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "Best cell:" in text and "10 tokens before the last is" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 4
    assert os.environ["ABLATION_RESULTS"] == str(results)
