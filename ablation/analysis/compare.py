"""Two results directories, record by record: which retrained records are byte-identical.

A record's numbers are its metrics.jsonl (every epoch's loss and dev accuracy; not the seconds),
predictions.csv, probes.json, and summary.json's accuracies and best epoch; where it ran and how
long it took may differ. `ablation compare NEW REFERENCE` (and `make reproduce`) print it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ablation.core.records import check_record

NUMBERS = ("dev_acc", "test_acc", "best_epoch", "status")  # summary.json's keys that must agree


@dataclass(frozen=True)
class Agreement:
    identical: list[str]  # run ids whose numbers agree to the byte
    different: dict[str, list[str]]  # run id -> the files (or summary keys) that differ
    unmatched: list[str]  # complete records of NEW with no complete record of the same id in REFERENCE


def _epochs(d: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (d / "metrics.jsonl").read_text().splitlines() if line]


def compare(new: str | os.PathLike, reference: str | os.PathLike) -> Agreement:
    """Each complete record of ``new`` against the record of the same run id in ``reference``."""
    identical, different, unmatched = [], {}, []
    for d in sorted(p for p in Path(new).iterdir() if p.is_dir() and not p.name.startswith(".")):
        ref = Path(reference) / d.name
        if check_record(d) is not None:
            continue
        if not ref.is_dir() or check_record(ref) is not None:
            unmatched.append(d.name)
            continue
        diffs = [] if _epochs(d) == _epochs(ref) else ["metrics.jsonl"]
        for name in ("predictions.csv", "probes.json"):
            mine, theirs = d / name, ref / name
            if theirs.exists() and (not mine.exists() or mine.read_bytes() != theirs.read_bytes()):
                diffs.append(name)
        a, b = (json.loads((x / "summary.json").read_text()) for x in (d, ref))
        diffs += [f"summary.json {k}" for k in NUMBERS if a.get(k) != b.get(k)]
        if diffs:
            different[d.name] = diffs
        else:
            identical.append(d.name)
    return Agreement(identical, different, unmatched)


def agreement_lines(a: Agreement, new: str | os.PathLike, reference: str | os.PathLike) -> list[str]:
    matched = len(a.identical) + len(a.different)
    lines = [f"{len(a.identical)} of {matched} records of {new} are byte-identical to {reference} "
             "(every epoch's loss and dev accuracy, predictions.csv, probes.json, the accuracies)."]
    if matched and not a.different:
        lines.append("As promised on an x86-64 CPU with AVX2 (docs/reproducibility.md).")
    for run_id, diffs in a.different.items():
        lines.append(f"differs: {run_id} ({', '.join(diffs)})")
    if a.unmatched:
        lines.append(f"{len(a.unmatched)} records have no counterpart in {reference}.")
    return lines
