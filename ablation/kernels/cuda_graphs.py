"""The training step as CUDA graphs, one per batch shape (B, T): a small model's step without the launch tax.

A graph fixes its shapes and its tensors' addresses, so each batch shape gets its own graph; the step is
`training/trainer.py`'s `train_step(whole_table=True)`, whose embedding gradient is the whole (M, V, E) table
(the usual step's `torch.unique` has a size that depends on the batch); each replay first copies its batch
into the graph's input tensors. The first batch of a shape is stepped eagerly (setting up cuBLAS, Triton and
autograd before capture), the second captured, then it and every later one replayed: a graphed run's numbers
are the eager whole-table run's (tests/test_train.py, tests/test_cuda.py). Not for clipped runs
(`train.clip_norm` > 0). Opt-in (ABLATION_CUDA_GRAPHS=1); records say `cuda_graphs`. See docs/performance.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

ENV = "ABLATION_CUDA_GRAPHS"  # "1": replay graphs on CUDA (see above); "0" or unset: eager steps

Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (ids, lengths, labels) -> (M,) losses


def wanted(device: torch.device, clip_norm: float) -> bool:
    """Whether a pack on ``device`` trains by replaying graphs (see the module doc)."""
    value = os.environ.get(ENV, "0")
    if value not in ("0", "1"):
        raise ValueError(f"{ENV}={value!r}: valid values are 0 (eager steps) and 1 (CUDA graphs)")
    return value == "1" and device.type == "cuda" and clip_norm == 0


class GraphedSteps:
    """``step`` (a whole-table `train_step` bound to its pack) as replays of per-shape CUDA graphs.

    Called like ``step``, on batches already on the GPU; returns the losses (M,) of the graph,
    valid until the next call of the same shape (the trainer adds them up at once)."""

    def __init__(self, step: Step, device: torch.device):
        self.step = step
        self.stream = torch.cuda.Stream(device)  # warm-up and capture on one stream, as capture needs
        self.graphs: dict[tuple[int, ...], tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...], torch.Tensor]] = {}
        self.warm: set[tuple[int, ...]] = set()  # shapes stepped eagerly once

    def __call__(self, ids: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        key = tuple(ids.shape)  # (B, T)
        caller = torch.cuda.current_stream()
        self.stream.wait_stream(caller)  # the batch, and whatever last read the losses
        with torch.cuda.stream(self.stream):
            if key not in self.warm:
                self.warm.add(key)
                losses = self.step(ids, lengths, labels)
            else:
                if key not in self.graphs:
                    self.graphs[key] = self._capture(ids, lengths, labels)
                graph, inputs, losses = self.graphs[key]
                for static, x in zip(inputs, (ids, lengths, labels)):
                    static.copy_(x)
                graph.replay()
        caller.wait_stream(self.stream)
        return losses

    def _capture(self, *batch: torch.Tensor):
        inputs = tuple(x.clone() for x in batch)
        graph = torch.cuda.CUDAGraph()
        # The step sets the gradients to None before its backward, so they are allocated in the graph's pool.
        with torch.cuda.graph(graph, stream=self.stream):
            losses = self.step(*inputs)
        return graph, inputs, losses
