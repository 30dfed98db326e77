"""The training table every results report carries, from the runs' ``fit_result.json``."""
from __future__ import annotations

import json
from pathlib import Path


def training_table(exp: Path, runs: list[tuple[str, str]], first_column: str) -> str:
    """A results table of the fits under ``exp`` (``(folder, label)`` each; folders without a
    ``fit_result.json`` are left out): trainable parameters, epochs, mean seconds per epoch, best score."""
    rows = [f"| {first_column} | trainable params | epochs | s / epoch | best validation |", "|---|---|---|---|---|"]
    for folder, label in runs:
        path = exp / folder / "fit_result.json"
        if path.exists():
            fit = json.loads(path.read_text())
            times = fit["epoch_times_s"]  # empty for a fit resumed from a checkpoint that kept no times
            per_epoch = f"{sum(times) / len(times):.1f}" if times else "–"
            rows.append(f"| {label} | {fit['trainable_params']:,} | {fit.get('epochs', len(times))} | "
                        f"{per_epoch} | {fit['monitor']} {fit['best_score']:.4f} |")
    return "\n".join(rows)
