"""ablation: which parts of an LSTM matter? Gate ablations of a configurable LSTM on SST.

The tree at a glance: `cell.py` (the gated LSTM and its variants), `rnn.py` (the GRU and
Elman RNN baselines), `model.py` (the classifier, packed), `train.py` (the protocol),
`probes.py` (gradient norms, gate statistics), `grid.py` (the resumable grid runner),
`aggregate.py` (tables with uncertainty), `plots.py`; `cli.py` is the command line.
"""

__version__ = "0.1.0"
