"""Time the fused grid against sequential torch.nn.LSTM on the same work.

Phrase-level SST, batch 10, the identical sequence of batches for every model, AdaGrad:
  (a) torch.nn.LSTM, one model at a time (packed sequences, sparse embedding gradients:
      the best a user would write),
  (b) our cell in a pack of one,
  (c) the fused pack of the 8 lecture gate combinations.
Prints model-epochs per second for each and the ratios; (b) and (c) run the scan a run
would (on CPU the whole step as one C++ call, `ablation/kernels/whole_step.py`). Then that
step against the same C++ kernels op by op through autograd (ABLATION_STEP=autograd) and
against torch's ops (`cell._Scan`, ABLATION_SCAN=python): whole training steps of (c) and (b)
on the same batches, alternating the paths, the medians of the per-repetition ratios. The last line is
`speedup: <c over a>`. Ratios, not seconds: the machine is noisy.

`--triton` times instead, on CUDA, one LSTM scan (forward and backward through time) of the pack of
8 gate sets: the Triton kernels (`cell.TritonScan`, ablation/triton_scan.py) against the Python scan
(`cell._Scan`); without a CUDA device or without triton it says so and times nothing.

Portable numerics by default, as training runs (ablation/numerics.py); `--fast-numerics`
times this CPU's own kernels instead, so the two runs give the portable mode's cost.

    python benchmarks/bench_grid.py [--steps 400] [--peephole none] [--threads 1] [--scan-repeats 5] [--fast-numerics]
    python benchmarks/bench_grid.py --triton [--steps 400] [--peephole none] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from unittest import mock

from ablation.training import numerics

# before torch is imported (its kernels read the pins once); main() checks they took effect
numerics.request("fast" if "--fast-numerics" in sys.argv[1:] else "portable")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from ablation.core.config import RunConfig, apply  # noqa: E402
from ablation.core.spec import LECTURE_ORDER, split_gates  # noqa: E402
from ablation.kernels import cpp, select, triton_scan  # noqa: E402
from ablation.models.cell import CellSpec, ScanFlags, TritonScan, _Scan, gate_masks  # noqa: E402
from ablation.tasks.sst import batch_order  # noqa: E402
from ablation.training.adagrad import PackAdagrad  # noqa: E402
from ablation.training.trainer import build_pack, data_for, train_step  # noqa: E402

COMBOS = [split_gates(g) for g in LECTURE_ORDER]  # the lecture's 8 gate sets


class Reference(nn.Module):
    """Embedding -> torch.nn.LSTM on packed sequences -> linear on the final hidden state."""

    def __init__(self, vocab: int, emb: int, hidden: int, sparse: bool = True):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb, sparse=sparse)
        self.lstm = nn.LSTM(emb, hidden, batch_first=True)
        self.out = nn.Linear(hidden, 2)

    def forward(self, ids, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(self.emb(ids), lengths, batch_first=True,
                                                   enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return self.out(h[0])


def time_reference(data, batches, cfg, sparse: bool = True) -> float:
    torch.manual_seed(0)
    model = Reference(len(data.vocab), cfg.model.embedding_dim, cfg.model.hidden_size, sparse)
    opt = torch.optim.Adagrad(model.parameters(), lr=cfg.train.lr)
    start = time.perf_counter()
    for ids, lengths, labels in batches:
        loss = nn.functional.cross_entropy(model(ids, lengths), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def time_pack(data, batches, cfgs) -> float:
    model, _ = build_pack(cfgs, data)
    opt = PackAdagrad(model, cfgs[0].train.lr)
    start = time.perf_counter()
    for ids, lengths, labels in batches:
        train_step(model, opt, ids, lengths, labels)
    return time.perf_counter() - start


STEP_PATHS = {  # how a training step reaches its kernels, as `select` reads the environment
    "python": {select.ENV: "python", select.STEP_ENV: "auto"},  # torch's ops and `_Scan`, through autograd
    "autograd": {select.ENV: "fused", select.STEP_ENV: "autograd"},  # the C++ kernels op by op, through autograd
    "one call": {select.ENV: "fused", select.STEP_ENV: "auto"},  # the whole step as one C++ call (whole_step.py)
}


def step_ratios(data, batches, cfgs, repeats: int) -> dict[str, list[float]]:
    """Seconds of whole train steps on each path of `STEP_PATHS` over the one call's, alternating the
    paths in each repetition: {"python": [...], "autograd": [...]}."""
    seconds = {path: [] for path in STEP_PATHS}
    with mock.patch.dict(os.environ):  # as it was afterwards
        for rep in range(repeats + 1):  # the first round warms up
            for path, env in STEP_PATHS.items():
                os.environ.update(env)
                t = time_pack(data, batches, cfgs)
                if rep:
                    seconds[path].append(t)
    return {p: [x / f for x, f in zip(seconds[p], seconds["one call"])] for p in ("python", "autograd")}


def time_scans_on_cuda(cfg, steps: int, repeats: int, length: int = 20) -> None:
    """--triton: seconds of ``steps`` scans, forward and backward, of the 8 gate sets on CUDA, Triton against
    `_Scan` (best of ``repeats``); ``length`` time steps (SST sentences average ~19 tokens)."""
    if not torch.cuda.is_available():
        print("--triton: no CUDA device here; nothing timed")
        return
    if not triton_scan.available():
        print("--triton: triton is not installed (pip install -e '.[triton]'); nothing timed")
        return
    specs = [CellSpec(g, cfg.model.peephole) for g in COMBOS]
    M, B, H, dev = len(specs), cfg.train.batch_size, cfg.model.hidden_size, torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    r = lambda *shape: torch.randn(*shape, generator=gen, device=dev) * 0.3  # noqa: E731
    xw, whh = r(length, M, B, 4 * H).requires_grad_(), r(M, 4 * H, H).requires_grad_()
    peeps = {"none": [None] * 3, "diagonal": [r(M, H).requires_grad_() for _ in range(3)],
             "full": [r(M, H, H).requires_grad_() for _ in range(3)]}[cfg.model.peephole]
    on, flags = gate_masks(specs, dev), ScanFlags(specs, dev)

    def run(scan) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            hs, cs, _, _ = scan.apply(xw, whh, *peeps, None, None, on, flags)
            hs.sum().backward()
        torch.cuda.synchronize()
        return time.perf_counter() - start

    seconds = {}
    for name, scan in (("triton", TritonScan), ("python", _Scan)):
        run(scan)  # warm-up (and the kernels' compilation)
        seconds[name] = min(run(scan) for _ in range(repeats))
        print(f"{name:7s} scan on {torch.cuda.get_device_name()}: {seconds[name] / steps * 1e3:.3f} ms "
              f"(T {length}, pack of {M}, batch {B}, H {H}, peephole {cfg.model.peephole})")
    print(f"triton over python: {seconds['python'] / seconds['triton']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=400, help="batches timed per path (of 7,762 an epoch)")
    ap.add_argument("--peephole", default="none", help="our cells' peepholes (nn.LSTM has none)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--repeats", type=int, default=3, help="best of N timings per path")
    ap.add_argument("--scan-repeats", type=int, default=5, help="alternating repetitions of the step paths")
    ap.add_argument("--dense-reference", action="store_true",
                    help="(a) with dense embedding gradients, as nn.Embedding's default gives")
    ap.add_argument("--fast-numerics", action="store_true",
                    help="this CPU's fastest kernels and --threads (default: portable numerics, one thread)")
    ap.add_argument("--json", help="append the figures here as one JSON line (results/bench/bench.jsonl: the README's)")
    ap.add_argument("--triton", action="store_true",
                    help="on CUDA: the Triton LSTM scan against the Python scan (see above), nothing else")
    args = ap.parse_args()
    if args.triton:
        time_scans_on_cuda(apply(RunConfig(), {"model.peephole": args.peephole}), args.steps, args.repeats)
        return
    if args.threads != 1 and not args.fast_numerics:
        ap.error("--threads above 1 needs --fast-numerics (portable numerics run one thread)")
    torch.set_num_threads(args.threads)
    numerics.enforce("cpu")
    cpp.keep_heap()  # as `trainer.train_pack` does, for every path timed here
    print(f"numerics: {numerics.describe('cpu')}")
    cfg = apply(RunConfig(), {"model.embeddings": "random", "model.peephole": args.peephole})
    data = data_for(cfg)
    order = batch_order(data.train.lengths, cfg.train.batch_size, seed=1, epoch=1)
    batches = [data.train.batch(idx) for idx in order[: args.steps]]
    epoch_batches = len(order)
    pack = [apply(cfg, {"model.gates": list(g)}) for g in COMBOS]
    paths = {
        "a": ("sequential torch.nn.LSTM", 1, lambda: time_reference(data, batches, cfg, not args.dense_reference)),
        "b": ("our cell, pack of 1", 1, lambda: time_pack(data, batches, pack[-1:])),
        "c": ("fused pack of 8", 8, lambda: time_pack(data, batches, pack)),
    }
    rate, ms = {}, {}
    for key, (name, models, run) in paths.items():
        run()  # warm-up
        seconds = min(run() for _ in range(args.repeats))
        epochs = models * len(batches) / epoch_batches  # model-epochs done in `seconds`
        rate[key] = epochs / seconds
        ms[key] = seconds / len(batches) * 1e3
        print(f"({key}) {name:28s} {rate[key]:8.4f} model-epochs/s  "
              f"({ms[key]:.2f} ms a batch)")
    print(f"(b)/(a): {rate['b'] / rate['a']:.2f}x   (c)/(a): {rate['c'] / rate['a']:.2f}x   "
          f"(scan: {select.scan_name()})")
    line = {"numerics": numerics.describe("cpu"), "scan": select.scan_name(), "steps": len(batches),
            "repeats": args.repeats, "scan_repeats": args.scan_repeats, "peephole": args.peephole,
            "cores": os.cpu_count(),
            "ms_per_batch": {k: round(v, 3) for k, v in ms.items()},
            "b_over_a": round(rate["b"] / rate["a"], 3), "c_over_a": round(rate["c"] / rate["a"], 3)}
    if select.scan_name() == "fused-cpp" and args.scan_repeats > 0:
        for key, cfgs in (("c", pack), ("b", pack[-1:])):
            r = step_ratios(data, batches, cfgs, args.scan_repeats)
            line[f"{key}_fused_over_python"] = round(statistics.median(r["python"]), 3)
            line[f"{key}_one_call_over_autograd"] = round(statistics.median(r["autograd"]), 3)
            for path, name in (("python", "torch's ops (ABLATION_SCAN=python)"),
                               ("autograd", "the C++ kernels through autograd (ABLATION_STEP=autograd)")):
                print(f"({key}) one-call step over {name}: median {statistics.median(r[path]):.2f}x  "
                      f"(repetitions: {' '.join(f'{x:.2f}' for x in r[path])})")
    if args.json:  # one line per numerics mode: `make tables` writes the README's figures from the newest
        with open(args.json, "a") as f:
            f.write(json.dumps(line) + "\n")
    print(f"speedup: {rate['c'] / rate['a']:.2f}")


if __name__ == "__main__":
    main()
