"""The multi-task ASR recipe's RESULTS.md from the rows ``evaluation/multitask.py`` stored, with the fusion
weights per layer and test set drawn as PNGs beside it."""
from __future__ import annotations

import json
from pathlib import Path

from ..adapters.fusion import BASE
from ..evaluation.multitask import FROZEN, TASKS
from ..errors import UserError
from ..fileio import atomic_write, write_json, write_text

SYNTHETIC_SUFFIX = "_tts"
FLOOR_POINTS = 1.0   # a frozen WER below this counts as this in a relative change
WORSE_POINTS = 0.5   # worse than the frozen model by more than this on a set: harm


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
        experts = list(TASKS) + [BASE] * (len(grid[0]) - len(TASKS))  # a base expert's weight comes last
        ax.set_xticks(range(len(experts)), experts, rotation=45, fontsize=7)
        ax.set_title(layer.split("layers.")[-1].split(".")[0].join(("layer ", "")), fontsize=8)
    axes[0][0].set_yticks(range(len(sets)), sets, fontsize=7)
    figure.suptitle(f"{title}: mean weight per adapter (columns) by test set (rows), per encoder layer", fontsize=8)
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"))
    plt.close(figure)


def real_speech(test_set: str) -> bool:
    """Whether a test set is real recordings (the recipe names its synthetic-voice sets ``*_tts``)."""
    return not test_set.endswith(SYNTHETIC_SUFFIX)


def against_frozen(wer: dict[str, float], frozen: dict[str, float]) -> dict:
    """A system's harm and help set by set, so that no set's mean can hide it: the mean over sets of the relative
    WER change (the frozen WER floored at ``FLOOR_POINTS``, so a near-zero set cannot dominate) and the real-speech
    sets where it is worse by more than ``WORSE_POINTS``."""
    changes = [(wer[s] - frozen[s]) / max(frozen[s], FLOOR_POINTS) for s in frozen]
    return {"mean_relative_change": round(100 * sum(changes) / len(changes), 2),
            "worse_real_sets": sorted(s for s in frozen if real_speech(s) and wer[s] > frozen[s] + WORSE_POINTS)}


def write_multitask_report(exp: str | Path, out: str | Path, command: str) -> Path:
    exp, out = Path(exp), Path(out)
    results = json.loads((exp / "results.json").read_text())
    sets, systems = list(results["test_sets"]), results["systems"]
    frozen = systems.get(FROZEN, {}).get("wer")
    if frozen:
        for row in systems.values():
            row.update(against_frozen(row["wer"], frozen))
    write_json(out.parent / "results.json", results)
    reals = sum(real_speech(s) for s in sets)
    header = ("| system | " + " | ".join(sets) + f" | mean | mean change vs frozen | real sets worse (of {reals}) "
              "| trained % | adapters run per site |")
    lines = [header, "|" + "---|" * (len(sets) + 6)]
    for name, row in systems.items():
        change = f"{row['mean_relative_change']:+.1f}%" if "mean_relative_change" in row else "n/a"
        worse = "n/a"
        if "worse_real_sets" in row:
            harmed = row["worse_real_sets"]
            worse = f"{len(harmed)}: {', '.join(harmed)}" if harmed else "0"
        lines.append(f"| {name} | " + " | ".join(f"{row['wer'][s]:.1f}" for s in sets)
                     + f" | {row['mean_wer']:.2f} | **{change}** | {worse} | {100 * row['trained_fraction']:.2f} | "
                     f"{row['adapters_per_site']} |")
    plots = []
    for name, row in systems.items():
        if row.get("weights"):
            png = out.parent / f"fusion_weights_{name.split(': ')[-1].replace(' (hard top-1)', '_hard')}.png"
            _plot_weights(row, name, png)
            plots.append(f"![{name}]({png.name})")
    task_of = ", ".join(f"{s} ({t})" for s, t in results["test_sets"].items())
    text = f"""# Task-ID-free multi-task ASR on the frozen Whisper tiny.en (adapter fusion)

Corpus WER % (the project's normaliser, greedy decoding with Whisper's fallback for every system) on
{len(sets)} test sets of four tasks: {task_of}. Test speakers, rooms and noises are never heard in training.
"mean change vs frozen" is the mean over test sets of each set's relative WER change from the frozen model
(its WER floored at {FLOOR_POINTS:g} point), so a set where the frozen model loops cannot carry the mean; "real
sets worse" names the real-speech sets (all but `*{SYNTHETIC_SUFFIX}`) where the system is more than
{WORSE_POINTS:g} points worse than the frozen model. "trained %" counts every parameter
trained to build the system (the single-task adapters included) against the base model's; "adapters run
per site" is the adapter deltas computed for an utterance at each adapted layer (one-hot routing runs only
the chosen adapter).

{chr(10).join(lines)}

{chr(10).join(plots)}

Regenerate: `{command}` (its last stage alone rebuilds this file and results.json from `{exp}`).
"""
    return write_text(out, text)


def best_fusion(exp: str | Path) -> Path:
    """The export of the task-ID-free fusion worse than the frozen model on the fewest real-speech sets, then
    with the lowest mean relative change, in ``exp/results.json``."""
    systems = json.loads((Path(exp) / "results.json").read_text())["systems"]
    frozen = systems.get(FROZEN, {}).get("wer")
    fused = {name: row for name, row in systems.items() if row["kind"] == "fusion"}
    if not fused or not frozen:
        raise UserError(f"{exp}/results.json scores no fusion or not the frozen model: run the recipe's stages 2 and 4")

    def rank(row: dict) -> tuple[int, float]:
        summary = against_frozen(row["wer"], frozen)
        return len(summary["worse_real_sets"]), summary["mean_relative_change"]
    return Path(min(fused.values(), key=rank)["export"])
