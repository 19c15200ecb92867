"""The `ablation` command line; the library lives in the other modules.

    ablation data   [--data-dir D] [--download]        verify SST (or fetch it) and count it
    ablation train  [--config F] [--set k=v ...] [--out DIR] [--device D] [--fast-numerics]
    ablation grid   EXPERIMENT [--out DIR] [--seeds N] [--device D] [--pack-size K] [--workers W] [--fast-numerics]
                    [--executor local|slurm] [--slurm.partition P --slurm.time MIN --slurm.gpus N
                     --slurm.cpus N --slurm.mem-gb N --slurm.max-parallel K]
    ablation table  RESULTS_DIR [--format md|csv|tex] [--readme README.md]
    ablation plot   RESULTS_DIR
    ablation predict  RUN_DIR ["a sentence" ...] [--file F] [--gates] [--plot FILE]
    ablation evaluate RUN_DIR [--split dev|test]
    ablation tensorboard RESULTS_DIR [--logdir D]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from .numerics import NumericsError, request  # torch-free: it must run before torch is imported
from .progress import EpochEnd


def cmd_data(args) -> int:
    from . import data

    try:
        d = None if args.download else data.find_sst_dir(args.data_dir)
    except data.DataNotFoundError:
        if args.data_dir or os.environ.get("SST_DIR"):  # a folder the user named: never replaced unasked
            raise
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

    from .grid import check_data, check_writable
    from .job import train_and_record
    from .records import check_record, quarantine

    if args.threads < 1:
        raise ValueError(f"--threads: must be an integer >= 1, got {args.threads}")
    exp = _experiment(args)
    cfg = exp.base
    out = Path(args.out or f"runs/{exp.name}")  # scratch; the grid owns results/
    record = out / cfg.run_id()
    if record.exists():
        reason = check_record(record)
        if reason is None:
            print(f"ablation: record {record} already exists and is kept; nothing trained "
                  "(delete it to train again)", file=sys.stderr)
            return 0
        print(f"ablation: damaged record moved to {quarantine(record, reason)} ({reason}); training it again",
              file=sys.stderr)
    check_data([cfg])
    check_writable(out)
    torch.set_num_threads(args.threads)
    tty = sys.stderr.isatty()  # a bar per epoch on a terminal, a line per epoch otherwise
    path = train_and_record([cfg], out, args.device, progress=None if tty else _epoch_printer(cfg.train.epochs),
                            show_bar=tty)
    s = json.loads((path[0] / "summary.json").read_text())
    if s["status"] != "complete":
        print(f"{s['status'].replace('_', ' ')}: {s.get('failure_reason')}; record: {path[0]}")
        return 1
    print(f"test {s['test_acc']:.2f}%, dev {s['dev_acc']:.2f}% (best epoch {s['best_epoch']}); record: {path[0]}")
    return 0


def _epoch_printer(epochs: int):
    def show(end: EpochEnd) -> None:
        print(f"epoch {end.epoch}/{epochs} done ({end.batches} batches)", file=sys.stderr, flush=True)

    return show


def cmd_grid(args) -> int:
    from .config import load_experiment
    from .grid import GridError, run_grid
    from .lock import LockedError

    exp = load_experiment(args.experiment, list(args.set or []))
    out = Path(args.out or f"results/{exp.name}")
    slurm = {k: v for k, v in vars(args).items() if k.startswith("slurm_") and v is not None}
    slurm = {k.removeprefix("slurm_"): v for k, v in slurm.items()}
    stop = {"signal": signal.SIGINT}

    def on_sigterm(signum, frame):  # what a scheduler or `kill PID` sends: stop as Ctrl-C does
        stop["signal"] = signal.SIGTERM
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        p = run_grid(exp, out, seeds=args.seeds, device=args.device, pack_size=args.pack_size,
                     workers=args.workers, threads=args.threads, executor=args.executor, slurm=slurm)
    except GridError as e:
        print(f"ablation: {e}", file=sys.stderr)
        return 1
    except LockedError as e:
        print(f"ablation: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # run_grid has stopped every job; their runs left no record
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        runs = exp.runs(args.seeds)
        done = sum((out / r.run_id()).is_dir() for r in runs)
        name = "interrupted" if stop["signal"] == signal.SIGINT else "terminated"
        print(f"\n{name}; {done} of {len(runs)} runs finished, rerun to resume", file=sys.stderr, flush=True)
        return 128 + stop["signal"]
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"{exp.name}: {len(p.runs)} runs, {p.done} already complete, "
          f"{sum(len(k) for k in p.todo)} trained in {len(p.todo)} packs -> {out}")
    return 0


def cmd_table(args) -> int:
    from .render import write_tables

    text = write_tables(args.results, fmt=args.format, experiment=args.experiment)
    if args.readme:
        from .render import update_readme

        update_readme(args.readme, args.results, args.experiment)
    print(text, end="")
    return 0


def cmd_tune(args) -> int:
    from .tune import run_tuning

    out = Path(args.out or f"results/{Path(args.experiment).stem}")
    for path in run_tuning(args.experiment, out, untuned=args.untuned, workers=args.workers, device=args.device,
                           threads=args.threads):
        print(path)
    if args.readme:
        from .render import update_readme

        update_readme(args.readme, out)
    return 0


def cmd_plot(args) -> int:
    from .plots import save_figures

    for path in save_figures(args.results, experiment=args.experiment):
        print(path)
    return 0


def cmd_predict(args) -> int:
    from .checkpoint import load_run
    from .predict import format_prediction, gate_figure, predict

    texts = list(args.sentences)
    if args.file:
        texts += [line.strip() for line in Path(args.file).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise ValueError("nothing to predict: give sentences or --file F (one sentence a line)")
    run = load_run(args.run)
    preds = predict(run, texts)
    for p in preds:
        print(format_prediction(p, gates=args.gates))
    if args.plot:
        import matplotlib.pyplot as plt

        fig, _ = gate_figure(preds, run.config.model.cell)
        path = Path(args.plot)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=150, bbox_inches="tight")  # the format follows the suffix (.png, .pdf, .svg)
        plt.close(fig)
        print(f"gate heat map: {path}", file=sys.stderr)
    return 0


def cmd_evaluate(args) -> int:
    from .checkpoint import load_run
    from .predict import evaluate
    from .train import resolve_device

    run = load_run(args.run, resolve_device(args.device))
    e = evaluate(run, args.split, args.data_dir)
    same = "" if e.recorded is None else (f"; the record says {e.recorded:.2f}%"
                                          + (" (equal)" if e.recorded == e.accuracy else " (DIFFERENT)"))
    print(f"{e.split} accuracy {e.accuracy:.2f}% on {e.sentences} sentences{same}")
    return 0 if e.recorded is None or e.recorded == e.accuracy else 1


def cmd_tensorboard(args) -> int:
    from .tb_export import export

    logdir = Path(args.logdir or Path("runs") / "tensorboard" / Path(args.results).resolve().name)
    runs = export(args.results, logdir)
    print(f"{len(runs)} runs -> {logdir} (view: tensorboard --logdir {logdir})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ablation", description="Which parts of an LSTM matter? Gate ablations on SST.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="verify the SST trees (downloading them if none are found) and print counts",
                       description="Find the SST trees (--data-dir, $SST_DIR, data/sst, ../shared/data/sst), check "
                                   "their SHA-256 and print counts. Writes nothing unless no copy is found or "
                                   "--download is given: then it fetches the official zip and writes train.txt, "
                                   "dev.txt and test.txt into data/sst (or --data-dir).")
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
        p.add_argument("--threads", type=int, default=1,
                       help="torch threads per training process (more than 1 needs --fast-numerics)")
        p.add_argument("--fast-numerics", action="store_true",
                       help="let torch pick this CPU's fastest kernels and threads: faster, but the records "
                            "retrain bit for bit only on this machine (default: portable numerics, see README)")

    p = sub.add_parser("train", help="train one model and write its run record (default under runs/)",
                       description="Train one model (config defaults < --config's fixed settings < --set) and write "
                                   "its run record to OUT/<run_id>/ (default runs/<experiment>/<run_id>/): "
                                   "config.json, metrics.jsonl, summary.json, predictions.csv, probes.json and "
                                   "checkpoint.pt (the best-on-dev weights). Prints one line (test and dev accuracy, "
                                   "best epoch, record path); progress goes to stderr.")
    p.add_argument("--config", help="experiment TOML; its [grid] axes are ignored (use `grid`)")
    p.add_argument("--data-dir", help="folder with the SST trees")
    run_opts(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("grid", help="train every run of an experiment's grid, skipping finished ones",
                       description="Train every run of an experiment's grid that has no complete record yet; each "
                                   "run's record goes to OUT/<run_id>/ (default results/<experiment>/), with the "
                                   "files `ablation train` writes; Slurm logs go to OUT/.slurm/. Prints one line.")
    p.add_argument("experiment", help="experiment TOML with a [grid] table")
    p.add_argument("--seeds", type=int, help="keep only the first N seeds of the grid")
    p.add_argument("--pack-size", type=int, default=8, help="runs fused into one training pass")
    p.add_argument("--workers", type=int, help="local packs trained at once (default: one per core, on CUDA too)")
    p.add_argument("--executor", default="local", choices=["local", "slurm"],
                   help="train packs here, or as a Slurm job array through submitit")
    from dataclasses import fields

    from .executors import SlurmOptions  # torch-free

    for f in fields(SlurmOptions):  # --slurm.KEY for each option, its help and default from the dataclass
        typ = str if f.name == "partition" else int
        p.add_argument(f"--slurm.{f.name.replace('_', '-')}", dest=f"slurm_{f.name}", type=typ,
                       help=f.metadata["help"] + ("" if f.default is None else f" (default {f.default})"))
    run_opts(p)
    p.set_defaults(func=cmd_grid)

    p = sub.add_parser("tune", help="hyperparameter search over a gate table (Optuna), then the best configuration "
                                    "of each gate set on fresh seeds; writes RESULTS/{study.db,trials/,selected/,"
                                    "tuned_table.*,importance.csv,figures/}")
    p.add_argument("experiment", help="experiment TOML with a [tune] table (e.g. experiments/tuning.toml)")
    p.add_argument("--untuned", default="results/lecture",
                   help="results of the same table at default settings, for the tuned-vs-untuned table")
    p.add_argument("--workers", type=int, help="batches trained at once (default: one per core)")
    p.add_argument("--readme", help="also fill this file's '<!-- table: RESULTS -->' (the tuned table) and "
                                    "'<!-- reading: RESULTS -->' (two sentences: does the ordering survive, what "
                                    "the gates explain against the learning rate) blocks")
    run_opts(p)
    p.set_defaults(func=cmd_tune)

    for name, func, text, writes in (
            ("table", cmd_table, "the gate table with uncertainty",
             "Write the gate table with uncertainty to RESULTS_DIR/table.md, table.csv and table.tex and print "
             "the --format one; --readme also fills that file's generated block."),
            ("plot", cmd_plot, "figures into RESULTS_DIR/figures",
             "Write the figures (accuracy, learning curves, probes) into RESULTS_DIR/figures/ as PNG and PDF "
             "and print their paths.")):
        p = sub.add_parser(name, help=text, description=writes)
        p.add_argument("results", help="results directory of run records")
        p.add_argument("--experiment",
                       help="experiment TOML for reference numbers (default: experiments/<folder name>.toml)")
        if name == "table":
            p.add_argument("--format", default="md", choices=["md", "csv", "tex"], help="what to print")
            p.add_argument("--readme", help="also fill this file's '<!-- table: RESULTS_DIR -->' and "
                                            "'<!-- reading: RESULTS_DIR -->' blocks (generated prose)")
        p.set_defaults(func=func)

    p = sub.add_parser("predict", help="classify raw sentences with a run's checkpoint",
                       description="Classify raw sentences with a run's best-on-dev weights (RUN_DIR/checkpoint.pt, "
                                   "config.json). The text is tokenised as SST was (Penn Treebank style, case kept); "
                                   "words outside the vocabulary read as <unk> and are listed. Prints label, "
                                   "probability and sentence, one line each; --gates adds each token's gate "
                                   "activations; --plot writes their heat map to FILE. Writes nothing else.")
    p.add_argument("run", metavar="RUN_DIR", help="a run record with a checkpoint.pt, e.g. results/single/<run_id>")
    p.add_argument("sentences", nargs="*", help="sentences to classify (quote each)")
    p.add_argument("--file", help="also classify this file's lines, one sentence a line")
    p.add_argument("--gates", action="store_true", help="print each token's gate activations (mean over units)")
    p.add_argument("--plot", metavar="FILE", help="write a heat map of the gate activations to FILE (.png, .pdf)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="recompute a run's accuracy from its checkpoint",
                       description="Recompute a run's dev or test accuracy from RUN_DIR/checkpoint.pt on the SST "
                                   "sentences and compare it with the record's summary.json. Prints one line and "
                                   "writes nothing; exit status 1 when the numbers differ.")
    p.add_argument("run", metavar="RUN_DIR", help="a run record with a checkpoint.pt")
    p.add_argument("--split", default="test", choices=["dev", "test"], help="which sentences (default test)")
    p.add_argument("--data-dir", help="folder with the SST trees (default: the run's, else the usual search)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run the model")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("tensorboard", help="write run records as TensorBoard event files",
                       description="Write every complete run record below RESULTS_DIR as TensorBoard event files, "
                                   "one run per record, into --logdir (default runs/tensorboard/<RESULTS_DIR "
                                   "name>/<run path>/): per-epoch train_loss, dev_acc and seconds, the best dev "
                                   "and the test accuracy, and the config as hyperparameters. A rerun replaces "
                                   "the event files. Needs the tensorboard extra.")
    p.add_argument("results", metavar="RESULTS_DIR", help="results directory of run records (searched recursively)")
    p.add_argument("--logdir", help="where to write (default runs/tensorboard/<RESULTS_DIR name>)")
    p.set_defaults(func=cmd_tensorboard)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(args, "fast_numerics"):  # a command that trains: pin the numerics before torch is imported
        if args.threads > 1 and not args.fast_numerics:  # (< 1 is refused with the other checks)
            print(f"ablation: error: --threads {args.threads} needs --fast-numerics "
                  "(portable numerics train on one thread: how a sum is split depends on the count)", file=sys.stderr)
            return 2
        request("fast" if args.fast_numerics else "portable")
    if getattr(args, "url", "unset") is None:
        from .data import SST_URL

        args.url = SST_URL
    try:
        return args.func(args)
    except (ValueError, KeyError, TypeError, OSError, NumericsError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"ablation: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
