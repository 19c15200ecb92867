"""The `ablation` command line: one small function per subcommand to build its parser (`SUBCOMMANDS`)
and one to run it (`cmd_*`); the library lives in the layers below. `main` turns a user error into
one line and exit 2. Every subcommand's --help says what it writes; README.md lists them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from ablation.core.errors import AblationError, ConfigError
from ablation.running.executors import GridError  # torch-free
from ablation.training.numerics import request  # torch-free: it must run before torch is imported
from ablation.training.progress import EpochEnd, epoch_line


def cmd_data(args) -> int:
    from ablation.tasks import sst as data

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
    from ablation.core.config import load_experiment

    sets = list(args.set or [])
    data_dir = getattr(args, "data_dir", None)
    if data_dir is not None:
        if not data_dir.strip():
            raise ConfigError("--data-dir: empty; give the folder holding train.txt, dev.txt and test.txt")
        sets.append(f"data.data_dir={json.dumps(data_dir)}")
    return load_experiment(args.config, sets)


def cmd_train(args) -> int:
    import torch

    from ablation.core.records import check_record, quarantine
    from ablation.running.grid import check_data, check_writable
    from ablation.running.job import train_and_record

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
    tty = sys.stderr.isatty()  # a bar over each epoch's batches on a terminal; a line per epoch always
    path = train_and_record([cfg], out, args.device, progress=_epoch_printer(), show_bar=tty)
    s = json.loads((path[0] / "summary.json").read_text())
    if s["status"] != "complete":
        print(f"{s['status'].replace('_', ' ')}: {s.get('failure_reason')}; record: {path[0]}")
        return 1
    if s.get("metric", "accuracy") == "accuracy":
        print(f"test {s['test_acc']:.2f}%, dev {s['dev_acc']:.2f}% (best epoch {s['best_epoch']}); record: {path[0]}")
    else:
        from ablation.core.spec import TASKS
        from ablation.training.best_on_dev import TRIVIAL

        print(f"test {s['metric']} {s['test_metric']:.4g}, dev {s['dev_metric']:.4g} (best epoch {s['best_epoch']}; "
              f"predicting the {TRIVIAL[TASKS[s['task']].baseline]}: {s['baseline_test']:.4g}); record: {path[0]}")
    return 0


def _epoch_printer():
    import time

    start = time.time()

    def show(end: EpochEnd) -> None:
        print(epoch_line(end, time.time() - start), file=sys.stderr, flush=True)

    return show


def cmd_grid(args) -> int:
    from ablation.core.config import load_experiment
    from ablation.running.grid import run_grid

    exp = load_experiment(args.experiment, list(args.set or []))
    out = Path(args.out or f"results/{exp.name}")
    if args.dry_run:
        from ablation.running.executors import EXECUTORS
        from ablation.running.grid import check_options, describe_plan, plan

        check_options(exp, seeds=args.seeds, pack_size=args.pack_size, workers=args.workers, threads=args.threads)
        workers = EXECUTORS[args.executor].planned_workers(args.workers, args.device)
        p = plan(exp, out, seeds=args.seeds, pack_size=args.pack_size, workers=workers)
        print("\n".join(describe_plan(p, out, workers, args.estimate_from)))
        return 0
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
    except KeyboardInterrupt as e:  # run_grid has stopped every job; their runs left no record
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        name = "interrupted" if stop["signal"] == signal.SIGINT else "terminated"
        done = getattr(e, "finished", None)
        so_far = f"{done[0]} of {done[1]} runs finished, " if done else ""
        print(f"\n{name}; {so_far}rerun to resume", file=sys.stderr, flush=True)
        return 128 + stop["signal"]
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"{exp.name}: {len(p.runs)} runs, {p.done} already complete, "
          f"{sum(len(k) for k in p.todo)} trained in {len(p.todo)} packs -> {out}")
    return 0


def cmd_table(args) -> int:
    from ablation.analysis.render import update_readme, write_tables

    texts = [write_tables(d, fmt=args.format, experiment=args.experiment) for d in args.results]
    if args.readme:
        update_readme(args.readme, args.results if len(args.results) > 1 else args.results[0], args.experiment)
    print("".join(texts), end="")
    return 0


def cmd_compare(args) -> int:
    from ablation.analysis.compare import agreement_lines, compare

    for d in (args.new, args.reference):
        if not Path(d).is_dir():
            raise FileNotFoundError(f"{d}: no such results directory")
    a = compare(args.new, args.reference)
    print("\n".join(agreement_lines(a, args.new, args.reference)))
    return 1 if a.different else 0


def cmd_config(args) -> int:
    from ablation.core.config import flatten, reference

    if args.what == "keys":
        for r in reference():
            print(f"{r['key']:24s} {r['type']:22s} default {r['default']:16s} {r['valid']}\n{'':24s} {r['reason']}")
        return 0
    exp = _experiment(args)
    for key, value in flatten(exp.base.to_dict()).items():
        print(f"{key} = {json.dumps(list(value) if isinstance(value, tuple) else value)}")
    print(f"# run id: {exp.base.run_id()}" + (f"; the grid has {len(exp.runs())} runs" if exp.has_grid else ""))
    return 0


def cmd_tune(args) -> int:
    from ablation.tune import run_tuning

    out = Path(args.out or f"results/{Path(args.experiment).stem}")
    for path in run_tuning(args.experiment, out, untuned=args.untuned, workers=args.workers, device=args.device,
                           threads=args.threads, paired=args.paired):
        print(path)
    return 0


def cmd_plot(args) -> int:
    from ablation.analysis.aggregate import experiment_for
    from ablation.analysis.plots import save_figures
    from ablation.analysis.render import own_reading

    exp = experiment_for(args.results, args.experiment)
    own = own_reading(exp)  # lag, likelihood: their own figures
    paths = own.save_figures(args.results, exp) if own is not None else save_figures(args.results,
                                                                                      experiment=args.experiment)
    for path in paths:
        print(path)
    return 0


def cmd_predict(args) -> int:
    from ablation.predict import format_prediction, gate_figure, predict
    from ablation.training.checkpoint import load_run

    texts = list(args.sentences)
    if args.file:
        texts += [line.strip() for line in Path(args.file).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise ConfigError("nothing to predict: give sentences or --file F (one sentence a line)")
    plot = Path(args.plot) if args.plot else None
    if plot is not None:  # refused now, not after predicting
        import matplotlib.pyplot as plt

        formats = plt.gcf().canvas.get_supported_filetypes()
        plt.close("all")
        if plot.suffix.lstrip(".").lower() not in formats:
            raise ConfigError(f"--plot {plot}: unknown image format {plot.suffix or '(none)'}; valid: "
                              f"{', '.join('.' + f for f in sorted(formats))}")
    run = load_run(args.run)
    if plot is not None and not run.model.specs[0].gates:
        raise ConfigError(f"--plot: the run's {run.config.model.cell} cell has no gates to plot")
    preds = predict(run, texts)
    for p in preds:
        print(format_prediction(p, gates=args.gates))
    if plot is not None:
        import matplotlib.pyplot as plt

        fig, _ = gate_figure(preds, run.config.model.cell)
        plot.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(plot, dpi=150, bbox_inches="tight")  # the format follows the suffix (.png, .pdf, .svg)
        plt.close(fig)
        print(f"gate heat map: {plot}", file=sys.stderr)
    return 0


def cmd_evaluate(args) -> int:
    from ablation.predict import evaluate
    from ablation.training.checkpoint import load_run
    from ablation.training.trainer import resolve_device

    run = load_run(args.run, resolve_device(args.device))
    e = evaluate(run, args.split, args.data_dir)
    same = "" if e.recorded is None else (f"; the record says {e.recorded:.2f}%"
                                          + (" (equal)" if e.recorded == e.accuracy else " (DIFFERENT)"))
    print(f"{e.split} accuracy {e.accuracy:.2f}% on {e.sentences} sentences{same}")
    return 0 if e.recorded is None or e.recorded == e.accuracy else 1


def cmd_tensorboard(args) -> int:
    from ablation.analysis.tensorboard import export

    logdir = Path(args.logdir or Path("runs") / "tensorboard" / Path(args.results).resolve().name)
    runs = export(args.results, logdir)
    print(f"{len(runs)} runs -> {logdir} (view: tensorboard --logdir {logdir})")
    return 0


def _run_options(p: argparse.ArgumentParser) -> None:
    """The options of every command that trains."""
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set model.gates=i+o (repeatable; `ablation config keys`)")
    p.add_argument("--out", help="results directory (default: results/<experiment> for grid, "
                                 "runs/<experiment> for train)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto takes CUDA when present")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per training process (more than 1 needs --fast-numerics)")
    p.add_argument("--fast-numerics", action="store_true",
                   help="let torch pick this CPU's fastest kernels and threads: faster, but the records retrain "
                        "bit for bit only on this machine (default: portable numerics, docs/reproducibility.md)")


def _add_data(sub) -> None:
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


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one model and write its run record (default under runs/)",
                       description="Train one model (config defaults < --config's fixed settings < --set) and write "
                                   "its run record to OUT/<run_id>/ (default runs/<experiment>/<run_id>/): "
                                   "config.json, metrics.jsonl, summary.json, predictions.csv, probes.json and "
                                   "checkpoint.pt (the best-on-dev weights). Prints one line (test and dev accuracy, "
                                   "best epoch, record path); progress goes to stderr.")
    p.add_argument("--config", help="experiment TOML; its [grid] axes are ignored (use `grid`)")
    p.add_argument("--data-dir", help="folder with the SST trees")
    _run_options(p)
    p.set_defaults(func=cmd_train)


def _add_grid(sub) -> None:
    from dataclasses import fields

    from ablation.running.executors import SlurmOptions  # torch-free

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
    p.add_argument("--dry-run", action="store_true", help="say what would train, and train nothing")
    p.add_argument("--estimate-from", metavar="RESULTS_DIR",
                   help="with --dry-run: the cost of the same runs, from their records in RESULTS_DIR")
    for f in fields(SlurmOptions):  # --slurm.KEY for each option, its help and default from the dataclass
        typ = str if f.name == "partition" else int
        p.add_argument(f"--slurm.{f.name.replace('_', '-')}", dest=f"slurm_{f.name}", type=typ,
                       help=f.metadata["help"] + ("" if f.default is None else f" (default {f.default})"))
    _run_options(p)
    p.set_defaults(func=cmd_grid)


def _add_tune(sub) -> None:
    p = sub.add_parser("tune", help="hyperparameter search over a gate table (Optuna), then the best configuration "
                                    "of each gate set on fresh seeds; writes RESULTS/{study.db,trials/,selected/,"
                                    "tuned_table.*,importance.csv,figures/}")
    p.add_argument("experiment", help="experiment TOML with a [tune] table (e.g. experiments/tuning.toml)")
    p.add_argument("--untuned", default="results/lecture",
                   help="results of the same table at default settings, for the tuned-vs-untuned table")
    p.add_argument("--workers", type=int, help="batches trained at once (default: one per core)")
    p.add_argument("--paired", metavar="RESULTS_DIR",
                   help="the selected configurations retrained on the untuned table's seeds (experiments/"
                        "tuned_paired.toml): each gate set's change of its gap to the full cell, tested paired")
    _run_options(p)
    p.set_defaults(func=cmd_tune)


def _add_table(sub) -> None:
    p = sub.add_parser("table", help="the gate table with uncertainty, and the results directory's page",
                       description="Write each RESULTS_DIR's gate table with uncertainty (table.md, table.csv, "
                                   "table.tex; effects.csv for a full gate grid) and its page README.md (the reading, "
                                   "the table, the probes, the figures), and print the --format table; --readme also "
                                   "fills that file's generated blocks (with several RESULTS_DIRs, also its index).")
    p.add_argument("results", nargs="+", metavar="RESULTS_DIR", help="results directory of run records")
    p.add_argument("--experiment", help="experiment TOML (default: the copy the grid kept in RESULTS_DIR)")
    p.add_argument("--format", default="md", choices=["md", "csv", "tex"], help="what to print")
    p.add_argument("--readme", help="also fill this file's '<!-- table: RESULTS_DIR -->', "
                                    "'<!-- reading: RESULTS_DIR -->' and '<!-- index: results -->' blocks")
    p.set_defaults(func=cmd_table)


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="figures into RESULTS_DIR/figures",
                       description="Write the figures (accuracy, learning curves, probes) into RESULTS_DIR/figures/ "
                                   "as PNG and PDF and print their paths.")
    _results_options(p)
    p.set_defaults(func=cmd_plot)


def _results_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", help="results directory of run records")
    p.add_argument("--experiment", help="experiment TOML (default: the copy the grid kept in RESULTS_DIR, "
                                        "else experiments/<folder name>.toml)")


def _add_predict(sub) -> None:
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


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="recompute a run's accuracy from its checkpoint",
                       description="Recompute a run's dev or test accuracy from RUN_DIR/checkpoint.pt on the SST "
                                   "sentences and compare it with the record's summary.json. Prints one line and "
                                   "writes nothing; exit status 1 when the numbers differ.")
    p.add_argument("run", metavar="RUN_DIR", help="a run record with a checkpoint.pt")
    p.add_argument("--split", default="test", choices=["dev", "test"], help="which sentences (default test)")
    p.add_argument("--data-dir", help="folder with the SST trees (default: the run's, else the usual search)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run the model")
    p.set_defaults(func=cmd_evaluate)


def _add_tensorboard(sub) -> None:
    p = sub.add_parser("tensorboard", help="write run records as TensorBoard event files",
                       description="Write every complete run record below RESULTS_DIR as TensorBoard event files, "
                                   "one run per record, into --logdir (default runs/tensorboard/<RESULTS_DIR "
                                   "name>/<run path>/): per-epoch train_loss, dev_acc and seconds, the best dev "
                                   "and the test accuracy, and the config as hyperparameters. A rerun replaces "
                                   "the event files. Needs the tensorboard extra.")
    p.add_argument("results", metavar="RESULTS_DIR", help="results directory of run records (searched recursively)")
    p.add_argument("--logdir", help="where to write (default runs/tensorboard/<RESULTS_DIR name>)")
    p.set_defaults(func=cmd_tensorboard)


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="which records of NEW_DIR are byte-identical to REFERENCE_DIR's",
                       description="Compare every complete record of NEW_DIR with the record of the same run id in "
                                   "REFERENCE_DIR: every epoch's loss and dev accuracy, predictions.csv, probes.json "
                                   "and the accuracies. Prints how many agree and which differ (exit 1 if any).")
    p.add_argument("new", metavar="NEW_DIR")
    p.add_argument("reference", metavar="REFERENCE_DIR")
    p.set_defaults(func=cmd_compare)


def _add_config(sub) -> None:
    p = sub.add_parser("config", help="the resolved config of an experiment file and --sets, or every key",
                       description="Print the resolved config (defaults < --config's fixed settings < --set), one "
                                   "key = value a line, and its run id, before anything trains; `ablation config keys` "
                                   "prints every key with its type, default, valid values and reason "
                                   "(docs/config.md).")
    p.add_argument("what", nargs="?", choices=["show", "keys"], default="show")
    p.add_argument("--config", help="experiment TOML")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value")
    p.set_defaults(func=cmd_config)


SUBCOMMANDS = (_add_data, _add_train, _add_grid, _add_tune, _add_table, _add_plot, _add_compare, _add_config,
               _add_predict, _add_evaluate, _add_tensorboard)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ablation", description="Which parts of an LSTM matter? Gate ablations on SST.")
    sub = ap.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a user error (`AblationError`, a bad value, a missing file) is one line and exit 2,
    packs that failed in a grid exit 1; anything else is a bug and keeps its traceback."""
    args = build_parser().parse_args(argv)
    if hasattr(args, "fast_numerics"):  # a command that trains: pin the numerics before torch is imported
        if args.threads > 1 and not args.fast_numerics:  # (< 1 is refused with the other checks)
            print(f"ablation: error: --threads {args.threads} needs --fast-numerics "
                  "(portable numerics train on one thread: how a sum is split depends on the count)", file=sys.stderr)
            return 2
        request("fast" if args.fast_numerics else "portable")
    if getattr(args, "url", "unset") is None:
        from ablation.tasks.sst import SST_URL

        args.url = SST_URL
    try:
        return args.func(args)
    except GridError as e:  # packs failed; the message names each and its log
        print(f"ablation: {e}", file=sys.stderr)
        return 1
    except (AblationError, ValueError, KeyError, TypeError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"ablation: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
