"""Results tables regenerated from what the runs wrote (fit_result.json, test_result.json)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from ..evaluation.classification import classification_rows
from ..fileio import write_text


def classification_table(exp: str | Path) -> tuple[str, list[dict]]:
    rows = classification_rows(exp)
    fold_names = sorted({k for r in rows for k in r["per_fold"]})
    head = ("| method | accuracy % (mean ± std) | folds | trainable params | trainable % | adapter on disk | "
            "s / epoch | " + " | ".join(fold_names) + " |")
    lines = [head, "|" + "---|" * (7 + len(fold_names))]
    for r in sorted(rows, key=lambda r: -r["acc_mean"]):
        per = " | ".join(f"{100 * r['per_fold'][f]:.1f}" if f in r["per_fold"] else "–" for f in fold_names)
        lines.append(f"| {r['method']} | {100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f} | {r['folds']} | "
                     f"{r['trainable']:,} | {100 * r['trainable'] / r['total']:.3f} | "
                     f"{r['export_bytes'] / 1024:.0f} KiB | {r['epoch_s']:.1f} | {per} |")
    return "\n".join(lines), rows


DATASETS = {
    "fsdd": ("FSDD spoken digits", "Leave-one-speaker-out: each fold trains on 5 speakers, selects the checkpoint on "
             "those speakers' takes 0-4 (validation), and tests the selected checkpoint on every clip of the 6th "
             "speaker. Per-fold columns give each held-out speaker."),
    "esc50": ("ESC-50 environmental sounds", "The 5 official folds: each trains on 4, selects the checkpoint on every "
              "10th clip of those (validation), and tests on the 5th."),
    "speechcommands": ("Speech Commands keywords", "The official split: validation list for selection, test list "
                       "for the score."),
}


def write_classification_report(exp: str | Path, out: str | Path, command: str) -> Path:
    table, rows = classification_table(exp)
    encoder, dataset = _run_names(rows[0]["config"])
    title, protocol = DATASETS.get(dataset, (dataset, "Folds as prepared by the recipe's stage 0."))
    text = f"""# {title}: PEFT on a frozen {encoder} encoder

{protocol}
Accuracy is the mean ± standard deviation over folds, each fold testing the checkpoint selected on
validation. Trainable parameters count the adapter and the linear head ("linear_probe" trains only
the head; "full" fine-tunes the whole encoder). "adapter on disk" is the exported adapter + head
(safetensors). Time per epoch is measured on this machine (CPU, 2 threads).

{table}

Regenerate: `{command}` (stage 3 alone rebuilds this table from `{exp}`).
"""
    return write_text(out, text)


def _run_names(config_path: str) -> tuple[str, str]:
    """(encoder name, dataset name) from a run's saved config."""
    cfg = OmegaConf.load(config_path)
    return str(cfg.encoder.name), str(cfg.data.name)
