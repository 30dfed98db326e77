"""``speech-peft score quality``: degraded vs restored audio, with a clean reference when there is one.

Files are paired by relative path (without suffix). Writes a per-file CSV, a summary table
(markdown), and before/after spectrogram PNGs for the first few files.
"""
from __future__ import annotations

import csv
import statistics
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data.audio import AudioError, load_audio
from ..data.builders import from_folder
from ..data.manifest import Entry
from ..data.rejects import Rejects
from ..errors import UserError
from ..fileio import atomic_write, write_text
from ..jobs.transcribe import transcribe_entries
from ..metrics import quality
from ..metrics.wer import read_references, score

INTRUSIVE = ("pesq_wb", "stoi", "si_sdr")
DEFAULT_ASR = "whisper-tiny.en"


def wer_column(model: str) -> str:
    """``wer`` for the default model (tiny.en), ``wer_<model>`` for any other."""
    return "wer" if model == DEFAULT_ASR else f"wer_{Path(model).name}"


def _files(folder: str | None, skip_bad: bool, rejects: Rejects) -> dict[str, str]:
    return {} if folder is None else {e.id: e.audio for e in from_folder(folder, skip_bad, rejects.path)}


def score_quality(degraded: str, restored: str | None, reference: str | None, report_dir: str,
                  transcripts: str | None = None, plots: int = 3, speaker: bool = True,
                  non_intrusive: bool = True, extra: dict[str, str] | None = None, skip_bad: bool = False,
                  asr_models: tuple[str, ...] = (DEFAULT_ASR,)) -> Path:
    """``extra``: more named folders of outputs (same relative names) scored like the restored ones.
    ``asr_models``: the Whisper models whose greedy English WER is reported (with ``transcripts``).
    ``skip_bad``: a file that cannot be read, or has no counterpart in another folder, leaves its id out
    of every condition, with the reason in ``report_dir/rejects.tsv``."""
    out = Path(report_dir)
    rejects = Rejects(out / "rejects.tsv" if skip_bad else None)
    deg, res, ref = (_files(f, skip_bad, rejects) for f in (degraded, restored, reference))
    more = {name: _files(folder, skip_bad, rejects) for name, folder in (extra or {}).items()}
    ids = sorted(deg)
    others = ([(restored, "restored file", res)] if restored is not None else []) + \
             [(f"{extra[name]} ({name})", "file", files) for name, files in more.items()] + \
             ([(reference, "clean reference", ref)] if reference is not None else [])
    for folder, what, files in others:
        missing = sorted(set(ids) - set(files))
        if missing and not skip_bad:
            raise UserError(f"{folder}: no {what} for {len(missing)} degraded input(s), e.g. {missing[:3]}")
        for uid in missing:
            rejects.add(deg[uid], f"no {what} in {folder}")
        ids = [i for i in ids if i in files]
    out.mkdir(parents=True, exist_ok=True)
    named = {"degraded": deg, **({"restored": res} if restored else {}), **more}
    conditions = {name: {uid: files[uid] for uid in ids} for name, files in named.items()}
    rows = []
    for uid in tqdm(ids, desc="quality", unit="file"):
        try:
            rows += _score_one(uid, conditions, ref, speaker, non_intrusive)
        except AudioError as err:  # NaN samples show only when the file is read
            rejects.skip_or_raise(err, skip_bad)
            for files in conditions.values():
                files.pop(uid, None)
    ids = [i for i in ids if i in conditions["degraded"]]
    for model in asr_models if transcripts else ():
        _add_wer(rows, conditions, transcripts, model)
    _write_csv(rows, out / "per_file.csv")
    write_text(out / "summary.md", _summary(rows, asr_models if transcripts else ()))
    for uid in ids[:plots]:
        _spectrograms(uid, {k: v[uid] for k, v in {"clean": ref, **conditions}.items() if uid in v},
                      out / f"spectrogram_{uid.replace('/', '_')}.png")
    print((out / "summary.md").read_text())
    return out


def _score_one(uid: str, conditions: dict[str, dict[str, str]], ref: dict[str, str], speaker: bool,
               non_intrusive: bool) -> list[dict]:
    clean = load_audio(ref[uid]).numpy() if ref else None
    rows = []
    for condition, files in conditions.items():
        wave = load_audio(files[uid]).numpy()
        row = {"id": uid, "condition": condition}
        if clean is not None:
            row.update(pesq_wb=quality.pesq_wb(clean, wave), stoi=quality.stoi(clean, wave),
                       si_sdr=quality.si_sdr(clean, wave))
        if non_intrusive:
            row.update(quality.dnsmos(wave))
        if speaker:
            anchor = clean if clean is not None else load_audio(conditions["degraded"][uid]).numpy()
            row["speaker_sim"] = quality.speaker_similarity(anchor, wave)
        rows.append(row)
    return rows


def _add_wer(rows: list[dict], conditions: dict[str, dict[str, str]], transcripts: str, model: str) -> None:
    refs, column = read_references(transcripts), wer_column(model)
    corpus_rows = {r["condition"]: r for r in rows if r["id"] == "<corpus>"}
    for condition, files in conditions.items():
        entries = [Entry(uid, path, 0.0, 0) for uid, path in files.items() if uid in refs]
        hyps = transcribe_entries(entries, model=model, progress=False, language="en")
        for row in rows:
            if row["condition"] == condition and row["id"] in hyps:
                row[column] = score([refs[row["id"]]], [hyps[row["id"]]]).wer
        corpus = score([refs[u] for u in hyps], list(hyps.values()))
        if condition not in corpus_rows:
            corpus_rows[condition] = {"id": "<corpus>", "condition": condition}
            rows.append(corpus_rows[condition])
        corpus_rows[condition][column] = corpus.wer


def _write_csv(rows: list[dict], path: Path) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, keys)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


def _summary(rows: list[dict], asr_models: tuple[str, ...]) -> str:
    metrics = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in ("id", "condition")]
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    lines = ["| condition | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for condition in conditions:
        cells = []
        for m in metrics:
            if m.startswith("wer"):
                corpus = [r[m] for r in rows if r["condition"] == condition and r["id"] == "<corpus>"]
                cells.append(f"{100 * corpus[0]:.1f}%" if corpus else "–")
                continue
            values = [r[m] for r in rows if r["condition"] == condition and m in r and r["id"] != "<corpus>"]
            cells.append(f"{statistics.mean(values):.3f}" if values else "–")
        lines.append(f"| {condition} | " + " | ".join(cells) + " |")
    wer = "; ".join(f"{wer_column(m)}: corpus WER of {m} (greedy, English)" for m in asr_models)
    return "\n".join(lines) + "\n\nMeans over files" + (f"; {wer}" if wer else "") + ".\n"


def _spectrograms(uid: str, files: dict[str, str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    fig, axes = plt.subplots(len(files), 1, figsize=(8, 2.2 * len(files)), squeeze=False)
    for ax, (name, file) in zip(axes[:, 0], files.items()):
        wave = load_audio(file)
        spec = torch.stft(wave, 512, 128, window=torch.hann_window(512), return_complex=True).abs()
        ax.imshow(20 * np.log10(spec.numpy() + 1e-6), origin="lower", aspect="auto", cmap="magma",
                  extent=[0, len(wave) / 16000, 0, 8], vmin=-80, vmax=20)
        ax.set_title(f"{uid}: {name}", fontsize=9)
        ax.set_ylabel("kHz")
    axes[-1, 0].set_xlabel("s")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
