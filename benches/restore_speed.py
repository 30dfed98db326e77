"""Real-time factor of restoration on the CPU: feature cleaner, WaveFit vocoder, and both together.

RTF = processing seconds / audio seconds, at batch 1 and batch 8, on 4 s of real speech per item,
with the default sizes (Whisper tiny.en tapped at layer 2 with parallel adapters; WaveFit with 5
iterations). Trained and untrained weights cost the same, so fresh adapters are used.

    .venv/bin/python benches/restore_speed.py [--threads 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from speech_peft.data.audio import load_audio
from speech_peft.tasks.restoration import build_cleaner_encoder
from speech_peft.vocoders.wavefit import WaveFit, WaveFitConfig

DATA = Path(__file__).resolve().parents[1] / "data" / "speech_samples" / "asr"
SECONDS = 4


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    speech = torch.cat([load_audio(p) for p in sorted(DATA.glob("*.wav"))] * 2)  # 55 s: room for 8 x 4 s
    encoder, _ = build_cleaner_encoder("whisper-tiny.en", tap_layer=2, bottleneck_dim=128, scale=1.0)
    vocoder = WaveFit(WaveFitConfig()).eval()
    encoder.eval()
    print(f"CPU, {args.threads} threads, {SECONDS} s items, median of {args.repeats}\n")
    print("| batch | cleaner RTF | vocoder RTF | total RTF |")
    print("|---|---|---|---|")
    for batch in (1, 8):
        waves = torch.stack([speech[i * SECONDS * 16000:(i + 1) * SECONDS * 16000] for i in range(batch)])
        cleaner_t, vocoder_t = [], []
        with torch.inference_mode():
            feats = encoder(waves).hidden  # warm-up
            vocoder(feats, return_all=False)
            for _ in range(args.repeats):
                start = time.perf_counter()
                feats = encoder(waves).hidden
                mid = time.perf_counter()
                vocoder(feats, return_all=False)
                end = time.perf_counter()
                cleaner_t.append(mid - start)
                vocoder_t.append(end - mid)
        audio = batch * SECONDS
        c, v = statistics.median(cleaner_t) / audio, statistics.median(vocoder_t) / audio
        print(f"| {batch} | {c:.4f} | {v:.4f} | {c + v:.4f} |")


if __name__ == "__main__":
    main()
