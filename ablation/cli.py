"""The `ablation` command line; the library lives in the other modules.

    ablation data   [--data-dir D] [--download]        verify SST (or fetch it) and count it
    ablation train  [--config F] [--set k=v ...] [--out DIR] [--device D]
    ablation grid   EXPERIMENT [--out DIR] [--seeds N] [--device D] [--pack-size K] [--workers W]
                    [--executor local|slurm] [--slurm.partition P --slurm.time MIN --slurm.gpus N
                     --slurm.cpus N --slurm.mem-gb N --slurm.max-parallel K]
    ablation table  RESULTS_DIR [--format md|csv|tex]
    ablation plot   RESULTS_DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_data(args) -> int:
    from . import data

    try:
        d = None if args.download else data.find_sst_dir(args.data_dir)
    except data.DataNotFoundError:
        d = None
    if d is None:  # asked to, or no copy anywhere: fetch the official zip
        d = data.download_sst(args.data_dir, url=args.url)
        print(f"downloaded and verified {d}")
    data.verify_sst(d)
    print(f"SST at {d}: sha256 verified for {', '.join(data.SPLITS)}")
    for split in data.SPLITS:
        trees = len(data.read_trees(d / f"{split}.txt"))
        binary = len(data.load_sst(split, data_dir=d, verify=False))
        print(f"  {split:5s} {trees:5d} trees, {binary:5d} binary sentences")
    phrases = len(data.load_sst("train", granularity="phrases", data_dir=d, verify=False))
    print(f"  train {phrases} distinct binary phrases")
    return 0


def _experiment(args):
    from .config import load_experiment

    sets = list(args.set or [])
    if getattr(args, "data_dir", None):
        sets.append(f"data.data_dir={args.data_dir!r}")
    return load_experiment(args.config, sets)


def cmd_train(args) -> int:
    import torch

    from .grid import train_and_record

    torch.set_num_threads(args.threads)
    exp = _experiment(args)
    cfg = exp.base
    out = Path(args.out or f"runs/{exp.name}")  # scratch; the grid owns results/
    tty = sys.stderr.isatty()  # a bar per epoch on a terminal, a line per epoch otherwise
    path = train_and_record([cfg], out, args.device, progress=None if tty else _epoch_printer(cfg.train.epochs),
                            show_bar=tty)
    summary = (path[0] / "summary.json").read_text()
    print(f"record: {path[0]}\n{summary}")
    return 0


def _epoch_printer(epochs: int):
    def show(epoch, batches):
        print(f"epoch {epoch}/{epochs} done ({batches} batches)", file=sys.stderr, flush=True)

    return show


def cmd_grid(args) -> int:
    from .config import load_experiment
    from .grid import GridError, run_grid

    exp = load_experiment(args.experiment, list(args.set or []))
    out = Path(args.out or f"results/{exp.name}")
    slurm = {k: getattr(args, f"slurm_{k}") for k in SLURM_FLAGS if getattr(args, f"slurm_{k}") is not None}
    try:
        p = run_grid(exp, out, seeds=args.seeds, device=args.device, pack_size=args.pack_size,
                     workers=args.workers, threads=args.threads, executor=args.executor, slurm=slurm)
    except GridError as e:
        print(f"ablation: {e}", file=sys.stderr)
        return 1
    print(f"{exp.name}: {len(p.runs)} runs, {p.done} already complete, "
          f"{sum(len(k) for k in p.todo)} trained in {len(p.todo)} packs -> {out}")
    return 0


SLURM_FLAGS = {  # --slurm.KEY; the same keys may stand in the experiment's [slurm] table
    "partition": (str, "partition to submit to (default: the cluster's default)"),
    "time": (int, "minutes each pack may run (default 60)"),
    "gpus": (int, "GPUs per pack (default 0)"),
    "cpus": (int, "CPUs per pack (default 1)"),
    "mem_gb": (int, "memory per pack in GB (default 4)"),
    "max_parallel": (int, "array tasks running at once (default 64)"),
}


def cmd_table(args) -> int:
    from .aggregate import write_tables

    text = write_tables(args.results, fmt=args.format, experiment=args.experiment)
    if args.readme:
        md = (Path(args.results) / "table.md").read_text(encoding="utf-8")
        update_readme(Path(args.readme), str(args.results), md)
    print(text, end="")
    return 0


def update_readme(readme: Path, key: str, block: str) -> None:
    """Replace what stands between `<!-- table: KEY -->` and `<!-- /table -->` (generated, not typed)."""
    start, end = f"<!-- table: {key} -->", "<!-- /table -->"
    text = readme.read_text(encoding="utf-8")
    if start not in text:
        raise ValueError(f"{readme}: no '{start}' marker to fill")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{block}{end}{tail}", encoding="utf-8")


def cmd_tune(args) -> int:
    from .tune import run_tuning

    out = Path(args.out or f"results/{Path(args.experiment).stem}")
    for path in run_tuning(args.experiment, out, untuned=args.untuned, workers=args.workers, device=args.device,
                           threads=args.threads):
        print(path)
    return 0


def cmd_plot(args) -> int:
    from .plots import save_figures

    for path in save_figures(args.results, experiment=args.experiment):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ablation", description="Which parts of an LSTM matter? Gate ablations on SST.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="verify the SST trees (downloading them if none are found) and print counts")
    p.add_argument("--data-dir", help="folder with train/dev/test.txt (default: SST_DIR, data/sst, ../shared/data/sst)")
    p.add_argument("--download", action="store_true",
                   help="fetch the official zip into data/sst (or --data-dir) even if a copy exists")
    p.add_argument("--url", default=None, help="zip to download instead of Stanford's (tests, mirrors)")
    p.set_defaults(func=cmd_data)

    def run_opts(p):
        p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                       help="override a config value, e.g. --set model.gates=input+output (repeatable)")
        p.add_argument("--out", help="results directory (default: results/<experiment> for grid, "
                                     "runs/<experiment> for train)")
        p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto takes CUDA when present")
        p.add_argument("--threads", type=int, default=1, help="torch threads per training process")

    p = sub.add_parser("train", help="train one model and write its run record (default under runs/)")
    p.add_argument("--config", help="experiment TOML; its [grid] axes are ignored (use `grid`)")
    p.add_argument("--data-dir", help="folder with the SST trees")
    run_opts(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("grid", help="train every run of an experiment's grid, skipping finished ones")
    p.add_argument("experiment", help="experiment TOML with a [grid] table")
    p.add_argument("--seeds", type=int, help="keep only the first N seeds of the grid")
    p.add_argument("--pack-size", type=int, default=8, help="runs fused into one training pass")
    p.add_argument("--workers", type=int, help="local packs trained at once (default: one per core; 1 on CUDA)")
    p.add_argument("--executor", default="local", choices=["local", "slurm"],
                   help="train packs here, or as a Slurm job array through submitit")
    for key, (typ, text) in SLURM_FLAGS.items():
        p.add_argument(f"--slurm.{key.replace('_', '-')}", dest=f"slurm_{key}", type=typ, help=text)
    run_opts(p)
    p.set_defaults(func=cmd_grid)

    p = sub.add_parser("tune", help="hyperparameter search over a gate table (Optuna), then the best configuration "
                                    "of each gate set on fresh seeds; writes RESULTS/{study.db,trials/,selected/,"
                                    "tuned_table.*,importance.csv,figures/}")
    p.add_argument("experiment", help="experiment TOML with a [tune] table (e.g. experiments/tuning.toml)")
    p.add_argument("--untuned", default="results/lecture",
                   help="results of the same table at default settings, for the tuned-vs-untuned table")
    p.add_argument("--workers", type=int, help="batches trained at once (default: one per core)")
    run_opts(p)
    p.set_defaults(func=cmd_tune)

    for name, func, text in (("table", cmd_table, "the gate table with uncertainty"),
                             ("plot", cmd_plot, "figures into RESULTS_DIR/figures")):
        p = sub.add_parser(name, help=text)
        p.add_argument("results", help="results directory of run records")
        p.add_argument("--experiment",
                       help="experiment TOML for reference numbers (default: experiments/<folder name>.toml)")
        if name == "table":
            p.add_argument("--format", default="md", choices=["md", "csv", "tex"], help="what to print")
            p.add_argument("--readme", help="also fill this file's '<!-- table: RESULTS_DIR -->' block")
        p.set_defaults(func=func)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "url", "unset") is None:
        from .data import SST_URL

        args.url = SST_URL
    try:
        return args.func(args)
    except (ValueError, KeyError, TypeError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"ablation: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
