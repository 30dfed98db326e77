"""The finished runs of a classification recipe, gathered per method (the table is ``reports/classification.py``)."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from ..errors import UserError


def classification_rows(exp: str | Path) -> list[dict]:
    """One row per method of a classification recipe's finished runs (fit_result.json + test_result.json per fold)."""
    exp = Path(exp)
    rows = []
    for method_dir in sorted(p for p in exp.iterdir() if p.is_dir() and p.name != "manifests"):
        folds = {}
        for fold_dir in sorted(method_dir.glob("fold_*")):
            fit, test = fold_dir / "fit_result.json", fold_dir / "test_result.json"
            if fit.is_file() and test.is_file():
                folds[fold_dir.name.removeprefix("fold_")] = (json.loads(fit.read_text()), json.loads(test.read_text()))
        if not folds:
            continue
        accs = [t["test/acc"] for _, t in folds.values()]
        fits = [f for f, _ in folds.values()]
        epoch_times = [s for f in fits for s in f["epoch_times_s"]]
        config = (method_dir / next(iter(folds)).join(["fold_", ""]) / "config.fit.yaml")
        rows.append({
            "method": method_dir.name, "folds": len(folds),
            "acc_mean": statistics.mean(accs), "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "per_fold": {k: t["test/acc"] for k, (_, t) in folds.items()},
            "trainable": fits[0]["trainable_params"], "total": fits[0]["total_params"],
            "export_bytes": fits[0]["export_bytes"], "epoch_s": statistics.mean(epoch_times),
            "epochs": len(fits[0]["epoch_times_s"]), "config": str(config),
        })
    if not rows:
        raise UserError(f"{exp}: no finished runs (fit_result.json + test_result.json) found")
    return rows
