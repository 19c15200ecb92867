"""What a retrain must reproduce of a record's metrics.jsonl: every epoch's numbers, not its wall time."""

import json
from pathlib import Path


def epoch_numbers(run_dir: Path) -> list[dict]:
    """Each metrics.jsonl line of ``run_dir`` without its ``seconds``."""
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
