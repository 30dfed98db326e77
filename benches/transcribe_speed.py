"""Transcription speed against faster-whisper, side by side in one run, on the same Whisper tiny.en weights
(and on the same Whisper base weights for the 12 sentences).

Rows (each configuration run alternately with the others, median of ``--repeats``, greedy, English):
- cold start: process wall time of one command transcribing one short file, ours (torch and CTranslate2
  backends) against a faster-whisper int8 script doing the same;
- steady state, models loaded once (faster-whisper: ``transcribe`` file by file, greedy, its other
  defaults, timestamp tokens only for the long file; ours: the batch job, windows batched by length): the
  12 real read sentences, three 30 s clips of them joined, and a
  5-minute recording of them joined with pauses (long-form: ours cuts it by voice activity, faster-whisper
  runs its own sequential 30 s windows); corpus WER beside each time where the words are known;
- an adapter: a LoRA merged and exported for CTranslate2, served by our backend and by faster-whisper
  on the same folder; a mixed batch (utterances naming two different adapters) against a batch through one.

faster-whisper is a benchmark-only dependency (``pip install -e '.[bench]'``).

    .venv/bin/python benches/transcribe_speed.py [--repeats 3] [--threads 2] [--sections tiny base adapters]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "speech_samples" / "asr"


def make_sets(folder: Path) -> dict[str, tuple[list[Path], list[str] | None]]:
    """Input sets as files: (paths, reference texts or None)."""
    from speech_peft.metrics.wer import read_references

    refs = read_references(str(DATA / "transcripts.tsv"))
    sentences = sorted(DATA.glob("*.wav"))
    waves = [sf.read(p, dtype="float32")[0] for p in sentences]
    rng = np.random.default_rng(0)
    joined, order = [], []
    for _ in range(10):
        for path, wave in zip(sentences, waves):
            joined += [wave, np.zeros(int(rng.uniform(0.3, 1.0) * 16000), dtype=np.float32)]
            order.append(refs[path.stem])
    joined = np.concatenate(joined)
    clips = []
    for i in range(3):
        clips.append(folder / f"clip30_{i}.wav")
        sf.write(clips[-1], joined[i * 480000:(i + 1) * 480000], 16000)
    long = folder / "long_5min.wav"
    sf.write(long, joined, 16000)
    return {"12 sentences": (sentences, [refs[p.stem] for p in sentences]),
            "3 x 30 s clips": (clips, None),
            f"{len(joined) / 16000 / 60:.1f} min recording": ([long], [" ".join(order)])}


def median_times(systems: dict, files: list[Path], repeats: int) -> tuple[dict[str, float], dict[str, list[str]]]:
    texts = {name: run(files[:1]) for name, run in systems.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(repeats):
        for name, run in systems.items():
            start = time.perf_counter()
            texts[name] = run(files)
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}, texts


def cold_start(repeats: int, threads: int, model_dir: str) -> dict[str, float]:
    file = str(DATA / "spk1_snt1.wav")
    cli = [sys.executable, "-m", "speech_peft.cli", "transcribe", file]
    fw = [sys.executable, "-c",
          "import sys; from faster_whisper import WhisperModel; "
          f"m = WhisperModel({model_dir!r}, device='cpu', compute_type='int8', cpu_threads={threads}); "
          "print(' '.join(s.text for s in m.transcribe(sys.argv[1], beam_size=1, language='en', "
          "without_timestamps=True)[0]))", file]
    commands = {"ours, torch": cli, "ours, CTranslate2 int8": [*cli, "--backend", "ctranslate2"],
                "faster-whisper int8": fw}
    times: dict[str, list[float]] = {k: [] for k in commands}
    for command in commands.values():  # warm the file cache and our weight cache
        subprocess.run(command, capture_output=True, check=True)
    for _ in range(repeats):
        for name, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True)
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def saved_lora(directory: Path, seed: int) -> str:
    import torch

    from speech_peft.adapters import LoRAConfig, add_adapter, save_adapter
    from speech_peft.adapters.injection import adapter_modules
    from speech_peft.encoders.whisper import load_whisper

    model = copy.deepcopy(load_whisper("whisper-tiny.en").model)
    add_adapter(model, LoRAConfig(r=8, target_roles=["attn.q", "attn.v"]), "default")
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in adapter_modules(model, "default").values():
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.01)
    return str(save_adapter(model, directory, base_model_name="whisper-tiny.en"))


SECTIONS = ("tiny", "base", "adapters")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    args = parser.parse_args()

    import torch
    from faster_whisper import WhisperModel

    from speech_peft.data.manifest import Entry
    from speech_peft.jobs.export import export_whisper
    from speech_peft.jobs.transcribe import load_decoder, transcribe_with
    from speech_peft.metrics.wer import score
    from speech_peft.weights import resolve_model_dir

    torch.set_num_threads(args.threads)
    model_dir = str(resolve_model_dir("whisper-tiny.en"))
    work = Path(tempfile.mkdtemp(prefix="transcribe_speed_"))
    sets = make_sets(work)

    def ours(decoder, backend="torch", adapters=None):
        def run(files):
            entries = [Entry(p.stem, str(p), 0.0, 0, adapter=(adapters[i % len(adapters)] if adapters else None))
                       for i, p in enumerate(files)]
            return [t.text for t in transcribe_with(decoder, entries, args.batch_size, progress=False, backend=backend)]
        return run

    def faster_whisper(model):
        def run(files):
            # Timestamp tokens cost decoding steps: off up to 30 s, as ours; on for long files, where
            # faster-whisper's sequential windows need them (without, they lose their place: 35% WER).
            return [" ".join(s.text.strip() for s in model.transcribe(
                str(p), beam_size=1, language="en", without_timestamps=sf.info(str(p)).duration <= 30.0)[0])
                for p in files]
        return run

    if "tiny" in args.sections:
        fw = {kind: WhisperModel(model_dir, device="cpu", compute_type=kind, cpu_threads=args.threads)
              for kind in ("int8", "float32")}
        systems = {"ours torch float32": ours(load_decoder()),
                   "ours torch int8": ours(load_decoder(compute_type="int8")),
                   "ours CTranslate2 int8": ours(load_decoder(backend="ctranslate2", compute_type="int8"), "ctranslate2"),
                   "faster-whisper int8": faster_whisper(fw["int8"]),
                   "faster-whisper float32": faster_whisper(fw["float32"])}

        print(f"Whisper tiny.en (same CTranslate2 weights), greedy, {args.threads} threads, batch {args.batch_size}, "
              f"median of {args.repeats} alternated runs\n")
        cold = cold_start(args.repeats, args.threads, model_dir)
        anchor = cold["faster-whisper int8"]
        print("Cold start: one 2.9 s file, whole process (seconds; ratio to faster-whisper int8)\n")
        print("| system | seconds | ratio |\n|---|---|---|")
        for name, seconds in cold.items():
            print(f"| {name} | {seconds:.2f} | {seconds / anchor:.2f} |")

        print("\nSteady state, models loaded (seconds per set; ratio to faster-whisper int8; corpus WER %)\n")
        print("| input | " + " | ".join(systems) + " |\n|---|" + "---|" * len(systems))
        for label, (files, refs) in sets.items():
            times, texts = median_times(systems, files, args.repeats)
            base = times["faster-whisper int8"]
            cells = []
            for name in systems:
                wer = f", {100 * score(refs, texts[name]).wer:.1f}%" if refs else ""
                cells.append(f"{times[name]:.2f} ({times[name] / base:.2f}x{wer})")
            print(f"| {label} | " + " | ".join(cells) + " |")

    if "base" in args.sections:
        base_dir = str(resolve_model_dir("whisper-base"))
        fw_base = WhisperModel(base_dir, device="cpu", compute_type="int8", cpu_threads=args.threads)
        base = {"ours torch float32": ours(load_decoder("whisper-base", language="en")),
                "ours torch int8": ours(load_decoder("whisper-base", compute_type="int8", language="en")),
                "ours CTranslate2 int8": ours(load_decoder("whisper-base", backend="ctranslate2", compute_type="int8"),
                                              "ctranslate2"),
                "faster-whisper int8": faster_whisper(fw_base)}
        files, refs = sets["12 sentences"]
        times, texts = median_times(base, files, args.repeats)
        print("\nWhisper base (multilingual, 74 M parameters, English given), 12 sentences (seconds; ratio to "
              "faster-whisper int8 on the same files; WER %)\n")
        print("| system | seconds | ratio | WER % |\n|---|---|---|---|")
        for name in base:
            print(f"| {name} | {times[name]:.2f} | {times[name] / times['faster-whisper int8']:.2f} | "
                  f"{100 * score(refs, texts[name]).wer:.1f} |")

    if "adapters" not in args.sections:
        return
    lora_a, lora_b = saved_lora(work / "lora_a", 1), saved_lora(work / "lora_b", 2)
    merged = str(export_whisper("whisper-tiny.en", work / "merged_ct2", lora_a))
    fw_merged = WhisperModel(merged, device="cpu", compute_type="int8", cpu_threads=args.threads)
    adapted = {"ours CTranslate2 int8, merged LoRA": ours(load_decoder(merged, backend="ctranslate2",
                                                                          compute_type="int8"), "ctranslate2"),
               "faster-whisper int8, same folder": faster_whisper(fw_merged),
               "ours torch, one adapter (batch)": ours(load_decoder(adapter=lora_a)),
               "ours torch, two adapters mixed in each batch": ours(load_decoder(row_adapters=[lora_a, lora_b]),
                                                                    adapters=[lora_a, lora_b])}
    files, refs = sets["12 sentences"]
    times, texts = median_times(adapted, files, args.repeats)
    print("\nAdapters, 12 sentences (seconds; WER % against the references)\n")
    print("| system | seconds | WER % |\n|---|---|---|")
    for name in adapted:
        print(f"| {name} | {times[name]:.2f} | {100 * score(refs, texts[name]).wer:.1f} |")
    ct2, same = times["ours CTranslate2 int8, merged LoRA"], times["faster-whisper int8, same folder"]
    one, mixed = times["ours torch, one adapter (batch)"], times["ours torch, two adapters mixed in each batch"]
    print(f"\nCTranslate2 backend / faster-whisper on the merged model: {ct2 / same:.2f}x; "
          f"mixed-adapter throughput / single-adapter: {one / mixed:.2f}x")


if __name__ == "__main__":
    main()
