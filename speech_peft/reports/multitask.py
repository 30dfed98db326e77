"""The multi-task ASR recipe's RESULTS.md from the rows ``evaluation/multitask.py`` stored, with the fusion
weights per layer and test set drawn as PNGs beside it."""
from __future__ import annotations

import json
from pathlib import Path

from ..evaluation.multitask import TASKS
from ..errors import UserError
from ..fileio import atomic_write, write_json, write_text


def _plot_weights(row: dict, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(row["weights"])
    layers = list(row["weights"][sets[0]])
    figure, axes = plt.subplots(1, len(layers), figsize=(2.2 * len(layers) + 1.5, 0.35 * len(sets) + 1.5),
                                sharey=True, squeeze=False)
    for ax, layer in zip(axes[0], layers):
        grid = [row["weights"][s][layer] for s in sets]
        ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(TASKS)), TASKS, rotation=45, fontsize=7)
        ax.set_title(layer.split("layers.")[-1].split(".")[0].join(("layer ", "")), fontsize=8)
    axes[0][0].set_yticks(range(len(sets)), sets, fontsize=7)
    figure.suptitle(f"{title}: mean weight per adapter (columns) by test set (rows), per encoder layer", fontsize=8)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"))
    plt.close(figure)


def write_multitask_report(exp: str | Path, out: str | Path, command: str) -> Path:
    exp, out = Path(exp), Path(out)
    results = json.loads((exp / "results.json").read_text())
    write_json(out.parent / "results.json", results)
    sets, systems = list(results["test_sets"]), results["systems"]
    reference = systems.get("full fine-tuning", {}).get("mean_wer")
    header = "| system | " + " | ".join(sets) + " | mean | vs full FT | trained % | adapters run per site |"
    lines = [header, "|" + "---|" * (len(sets) + 5)]
    for name, row in systems.items():
        relative = f"{100 * (row['mean_wer'] - reference) / reference:+.1f}%" if reference else "n/a"
        lines.append(f"| {name} | " + " | ".join(f"{row['wer'][s]:.1f}" for s in sets)
                     + f" | **{row['mean_wer']:.2f}** | {relative} | {100 * row['trained_fraction']:.2f} | "
                     f"{row['adapters_per_site']} |")
    plots = []
    for name, row in systems.items():
        if row.get("weights"):
            png = out.parent / f"fusion_weights_{name.split(': ')[-1].replace(' (hard top-1)', '_hard')}.png"
            _plot_weights(row, name, png)
            plots.append(f"![{name}]({png.name})")
    task_of = ", ".join(f"{s} ({t})" for s, t in results["test_sets"].items())
    text = f"""# Task-ID-free multi-task ASR on the frozen Whisper tiny.en (adapter fusion)

Corpus WER % (the project's normaliser, greedy decoding) on ten test sets of four tasks: {task_of}.
Test speakers, rooms and noises are never heard in training. "trained %" counts every parameter
trained to build the system (the single-task adapters included) against the base model's; "adapters run
per site" is the adapter deltas computed for an utterance at each adapted layer (one-hot routing runs only
the chosen adapter).

{chr(10).join(lines)}

{chr(10).join(plots)}

Regenerate: `{command}` (its last stage alone rebuilds this file and results.json from `{exp}`).
"""
    return write_text(out, text)


def best_fusion(exp: str | Path) -> Path:
    """The export of the task-ID-free fusion with the lowest mean WER in ``exp/results.json``."""
    systems = json.loads((Path(exp) / "results.json").read_text())["systems"]
    fused = {name: row for name, row in systems.items() if row["kind"] == "fusion"}
    if not fused:
        raise UserError(f"{exp}/results.json scores no fusion: run the recipe's stages 2 and 4")
    return Path(min(fused.values(), key=lambda row: row["mean_wer"])["export"])
