"""ablation: which parts of an LSTM matter? Gate ablations of a configurable LSTM on SST.

The tree at a glance (README, "The tree"): `spec.py` (the vocabulary, torch-free), `cell.py`
(the gated LSTM and its scans), `fused.py` and `csrc/` (CPU kernels), `rnn.py`, `model.py`,
`train.py` (the protocol), `grid.py` -> `executors.py` -> `job.py` (running experiments),
`records.py`, `aggregate.py` -> `readings.py` -> `render.py` (tables and the README),
`stats.py`, `plots.py`; `cli.py` is the command line.
"""

__version__ = "0.1.0"
