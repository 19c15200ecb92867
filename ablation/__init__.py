"""ablation: which parts of an LSTM matter? Gate ablations of a configurable LSTM on SST.

The layers, lowest first (a module imports only from its own layer or those before it):
core (spec, config, records, errors; torch-free) -> kernels (C++ and Triton scans, which runs where,
fixed-order matmuls, CUDA graphs) -> models (cell, rnn, classifier) -> tasks (sst, vectors, splits)
-> training (trainer, adagrad, best_on_dev, probes, numerics, checkpoint, progress) -> running (grid,
executors, job, lock) -> analysis (stats, aggregate, readings, render, plots, tensorboard; torch-free).
At the top: `cli` (the command line, also `python -m ablation`), `tune` (hyperparameter search) and
`predict` (using a trained run). Reference pages: docs/.
"""

__version__ = "0.1.0"
