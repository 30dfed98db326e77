"""Our Whisper greedy transcription against faster-whisper on the same CTranslate2 weights and files.

Inputs are real read sentences (data/speech_samples/asr) joined into 5 s, 10 s and 30 s clips, plus
the 12 sentences as they are. Each configuration is run alternately with the others, median of
``--repeats``; the encoder-only forward time (the floor for any decoder) is reported alongside.
faster-whisper is a benchmark-only dependency: ``pip install faster-whisper``.

    .venv/bin/python benches/transcribe_speed.py [--repeats 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from speech_peft.data.audio import load_audio

DATA = Path(__file__).resolve().parents[1] / "data" / "speech_samples" / "asr"


def clips() -> dict[str, list[np.ndarray]]:
    sentences = [load_audio(p, 16000) for p in sorted(DATA.glob("*.wav"))]
    joined = torch.cat([torch.cat([s, torch.zeros(4000)]) for s in sentences * 3])
    sets = {f"{n} s": [joined[i * n * 16000:(i + 1) * n * 16000].numpy() for i in range(3)] for n in (5, 10, 30)}
    sets["12 sentences"] = [s.numpy() for s in sentences]
    return sets


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from faster_whisper import WhisperModel

    from speech_peft.asr.whisper_ar import WhisperTranscriber
    from speech_peft.encoders.whisper import load_whisper, log_mel, resolve_model_dir

    directory = str(resolve_model_dir("whisper-tiny.en"))
    ours = WhisperTranscriber(load_whisper("whisper-tiny.en"))
    fw = {kind: WhisperModel(directory, device="cpu", compute_type=kind, cpu_threads=args.threads)
          for kind in ("int8", "float32")}

    def run_ours(files):
        for f in files:
            ours.transcribe(torch.from_numpy(f)[None])

    def run_fw(kind):
        def run(files):
            for f in files:
                segments, _ = fw[kind].transcribe(f, beam_size=1, language="en", without_timestamps=True,
                                                  condition_on_previous_text=False, vad_filter=False)
                list(segments)
        return run

    def run_encoder(files):
        with torch.inference_mode():
            for f in files:
                ours.model.model.encoder(log_mel(torch.from_numpy(f)[None]))

    systems = {"ours greedy": run_ours, "faster-whisper int8": run_fw("int8"),
               "faster-whisper float32": run_fw("float32"), "encoder only (ours)": run_encoder}
    print(f"Whisper tiny.en, same CTranslate2 weights, greedy, {args.threads} threads, median of {args.repeats} "
          "alternated runs; seconds per set\n")
    print("| input | files | " + " | ".join(systems) + " | ours / fw int8 | ours / fw float32 |")
    print("|---|---|" + "---|" * (len(systems) + 2))
    for name, files in clips().items():
        for run in systems.values():  # warm-up
            run(files[:1])
        times = {k: [] for k in systems}
        for _ in range(args.repeats):
            for key, run in systems.items():
                start = time.perf_counter()
                run(files)
                times[key].append(time.perf_counter() - start)
        med = {k: statistics.median(v) for k, v in times.items()}
        cells = " | ".join(f"{med[k]:.2f}" for k in systems)
        print(f"| {name} | {len(files)} | {cells} | {med['ours greedy'] / med['faster-whisper int8']:.2f} | "
              f"{med['ours greedy'] / med['faster-whisper float32']:.2f} |")


if __name__ == "__main__":
    main()
