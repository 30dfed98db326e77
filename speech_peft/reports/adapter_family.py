"""The adapter-family tables of a classification recipe, measured on its finished runs and written into its
RESULTS.md between markers (the main table above them is left as it is):

- per method: accuracy over folds, trainable %, bytes of the saved adapter, encoder time with the adapter
  relative to the bare encoder (alternated, on test clips);
- low-bit storage: each fold's exported adapter saved in 8, 4, 2 and 1 bits, reloaded and tested;
- merging: adapters trained on the same fold from different seeds, each alone, their ensemble (mean
  probabilities) and every merge (heads averaged), on that fold's test speaker.
"""
from __future__ import annotations

import statistics
from pathlib import Path


from ..adapters.merging import METHODS as MERGES
from ..fileio import write_json, write_text

# Each section of the family tables: its heading, what its method table's columns mean, its markers.
SECTIONS = {
    "sparse": ("Adapter family: sparse, split-and-merge, low-bit storage, merging",
               "\"trainable %\" counts every adapter weight (a sparse adapter trains only its kept 40%)"),
    "routed": ("Adapter family: multi-head, generated, routed, conditional and rank-parallel adapters",
               "\"trainable %\" counts what trains (a hypernetwork, a routed inventory, every rank's factors "
               "once); HD-PiSSA and LTE train on 2 processes with DDP, 16 clips each per step; CoDA's "
               "\"vs dense\" is the same trained adapter with every token through every block"),
}


def markers(section: str) -> tuple[str, str]:
    tag = "adapter family" if section == "sparse" else f"adapter family ({section})"
    return f"<!-- {tag}: begin -->", f"<!-- {tag}: end -->"


BEGIN, END = markers("sparse")


def render(result: dict, section: str = "sparse") -> str:
    folds = sorted({f for r in result["methods"] for f in r.get("per_fold", {})})
    title, trainable_note = SECTIONS[section]
    begin, end = markers(section)
    speed = any(r.get("speedup_vs_dense") for r in result["methods"])
    lines = [begin, "", f"## {title}", "",
             "Measured together (same day, same settings); \"adapter on disk\" is the adapter file alone, "
             f"{trainable_note}; encoder time is with the adapter against the bare encoder, alternated, on 32 "
             "test clips.", "",
             "| method | accuracy % (mean ± std) | folds | trainable % | adapter on disk | encoder time vs bare | "
             + ("faster than dense | " if speed else "") + "s / epoch | " + " | ".join(folds) + " |",
             "|" + "---|" * (7 + speed + len(folds))]
    for r in sorted(result["methods"], key=lambda r: -r["acc_mean"]):
        per = " | ".join(f"{100 * r['per_fold'][f]:.1f}" if f in r.get("per_fold", {}) else "–" for f in folds)
        dense = (f"{r['speedup_vs_dense']:.2f}x | " if r.get("speedup_vs_dense") else "– | ") if speed else ""
        lines.append(f"| {r['method']} | {100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f} | {r['folds']} | "
                     f"{100 * r['trainable'] / r['total']:.3f} | {r['adapter_bytes'] / 1024:.0f} KiB | "
                     f"{r['relative_time']:.2f}x | {dense}{r.get('epoch_s', 0):.1f} | {per} |")
    if result["storage"]:
        bits = [k for k in result["storage"][0] if k.endswith("-bit")]
        lines += ["", "Low-bit storage of the trained parallel adapters (each fold's export saved in fewer bits, "
                      "reloaded, tested on its held-out speaker; bytes of the adapter file):", "",
                  "| fold | float32 | " + " | ".join(bits) + " |", "|---|---|" + "---|" * len(bits)]
        for e in result["storage"]:
            cells = " | ".join(f"{100 * e[b]:.1f}% ({e['bytes'][b.split('-')[0]] / 1024:.0f} KiB)" for b in bits)
            lines.append(f"| {e['fold']} | {100 * e['float32']:.1f}% ({e['bytes']['32'] / 1024:.0f} KiB) | {cells} |")
        mean = lambda key: 100 * statistics.mean(e[key] for e in result["storage"])  # noqa: E731
        lines.append("| mean | " + f"{mean('float32'):.1f}%" + " | " + " | ".join(f"{mean(b):.1f}%" for b in bits) + " |")
    coda = result.get("coda")
    if coda:
        lines += ["", f"CoDA: the trained `{coda['method']}` adapters run with 1 token in n through each block at "
                      f"inference (n = 1 is the dense path: every token through every block, same weights); accuracy "
                      f"over {coda['folds']} folds, encoder time on 32 test clips against the dense path:", "",
                  "| tokens through each block | accuracy % | encoder time vs dense | speed-up |", "|---|---|---|---|"]
        for row in coda["rows"]:
            share = "all" if row["reduction"] == 1 else f"1 in {row['reduction']}"
            lines.append(f"| {share} | {100 * row['accuracy']:.2f} | {row['time_vs_dense']:.2f}x | "
                         f"{1 / row['time_vs_dense']:.2f}x |")
    merging = result.get("merging")
    if merging:
        names = ["inputs"] + ["ensemble"] + list(MERGES)
        lines += ["", f"Merging {len(merging['inputs'])} parallel adapters trained on fold {merging['fold']} from "
                      "different seeds (heads averaged), tested on its held-out speaker:", "",
                  "| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
        inputs = " / ".join(f"{100 * a:.1f}" for a in merging["inputs"])
        lines.append(f"| {inputs} | " + " | ".join(f"{100 * merging[n]:.1f}" for n in names[1:]) + " |")
    return "\n".join(lines + ["", end, ""])


def write_family_report(exp: str | Path, out: str | Path, result: dict, section: str = "sparse") -> Path:
    """Put the rendered tables of ``section`` into ``out`` between its markers, replacing an earlier version
    in place (other sections and the main table stay as they are)."""
    write_json(Path(exp) / ("adapter_family.json" if section == "sparse" else f"adapter_family_{section}.json"),
               result)
    out = Path(out)
    text = out.read_text() if out.is_file() else ""
    begin, end = markers(section)
    if begin in text and end in text:
        head, tail = text[: text.index(begin)], text[text.index(end) + len(end):].lstrip("\n")
        return write_text(out, head + render(result, section) + ("\n" + tail if tail else ""))
    return write_text(out, text.rstrip("\n") + "\n\n" + render(result, section))

