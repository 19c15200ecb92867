"""A results directory's files: walking its record folders and reading their numbers, and writing its
generated files (tables, CSVs, pages), each rewritten only when its text changes, so a read-only directory
of current tables is not an error and `make tables` leaves unchanged files untouched."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from ablation.core.records import TMP_PREFIX, check_record


def write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` unless the file already holds it."""
    if not (path.is_file() and path.read_text(encoding="utf-8") == text):
        path.write_text(text, encoding="utf-8")


def record_dirs(root: Path, files: tuple[str, ...]) -> Iterator[tuple[Path, str | None]]:
    """Each record folder directly under ``root`` (one holding any of ``files``) with why it is not a whole
    record (`records.check_record`; an unfinished temporary says so), None for a whole one; in name order.
    figures/, hidden folders (.broken/, .slurm/) and others holding none of ``files`` are not records."""
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if d.name.startswith(TMP_PREFIX):
            yield d, "an unfinished temporary"
        elif not d.name.startswith(".") and any((d / f).exists() for f in files):
            yield d, check_record(d)


def finite(x) -> float:
    """A record's number as a float, nan where it is missing (null), not a number, or not finite."""
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) else math.nan


def csv_text(frame: pd.DataFrame, float_format: str = "%.6g") -> str:
    """A frame as CSV text: no index, "\\n" line ends, floats as ``float_format``."""
    return frame.to_csv(index=False, float_format=float_format, lineterminator="\n")
