"""The experiment's results file (one JSON row per run) and how its numbers are summarised."""

import json
from pathlib import Path

import numpy as np

COLUMNS = ("map", "p@5", "p@10", "p@50", "p@100")  # the SRL paper's table


def read_rows(out: Path) -> list[dict]:
    path = out / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def append_row(out: Path, row: dict) -> None:
    with (out / "results.jsonl").open("a") as results:
        results.write(json.dumps(row) + "\n")


def mean_std(rows: list[dict], column: str) -> str:
    """Percent, mean ± sample std over the rows (the mean alone for one row)."""
    values = 100 * np.array([row[column] for row in rows])
    return f"{values.mean():.2f}" + (f" ± {values.std(ddof=1):.2f}" if len(values) > 1 else "")
