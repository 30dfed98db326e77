"""Real-time factor of restoration on the CPU, by part: feature cleaner, then each vocoder backend
(the bridge + frozen HiFi-GAN V1, the bridge + the distilled student of V1, and WaveFit), measured
side by side on the same clips.

RTF = processing seconds / audio seconds, at batch 1 and batch 8, on 4 s of real speech per item,
with the default sizes (Whisper tiny.en tapped at layer 2 with parallel adapters; the bridge of
``conf/task/restore_bridge.yaml``; WaveFit with 5 iterations). Trained and untrained weights cost the
same, so fresh adapters, bridge and WaveFit are used (HiFi-GAN is the pretrained generator).

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
from speech_peft.vocoders.bridge import BridgeConfig, BridgedHiFiGAN, FeatureToMel
from speech_peft.vocoders.hifigan import mel_frames
from speech_peft.vocoders.student import StudentVocoder
from speech_peft.vocoders.wavefit import WaveFit, WaveFitConfig

DATA = Path(__file__).resolve().parents[1] / "data" / "speech_samples" / "asr"
SECONDS = 4


def _median_seconds(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    speech = torch.cat([load_audio(p) for p in sorted(DATA.glob("*.wav"))] * 2)  # 55 s: room for 8 x 4 s
    encoder, _ = build_cleaner_encoder("whisper-tiny.en", tap_layer=2, bottleneck_dim=128, scale=1.0)
    hifigan = BridgedHiFiGAN(FeatureToMel(BridgeConfig(feature_dim=encoder.dim))).eval()
    wavefit = WaveFit(WaveFitConfig()).eval()
    student = StudentVocoder().eval()
    encoder.eval()
    print(f"CPU, {args.threads} threads, {SECONDS} s items, median of {args.repeats}\n")
    print("| batch | cleaner | bridge | HiFi-GAN V1 | student | cleaner + bridge + V1 | cleaner + bridge + student "
          "| V1 / student | WaveFit | cleaner + WaveFit |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    samples = SECONDS * 16000
    for batch in (1, 8):
        waves = torch.stack([speech[i * samples:(i + 1) * samples] for i in range(batch)])
        with torch.inference_mode():
            feats = encoder(waves).hidden
            mel = hifigan.bridge(feats, mel_frames(samples))
            parts = {
                "cleaner": lambda: encoder(waves).hidden,
                "bridge": lambda: hifigan.bridge(feats, mel_frames(samples)),
                "generator": lambda: hifigan.generator(mel),
                "student": lambda: student(mel),
                "wavefit": lambda: wavefit.synthesise(feats, samples),
            }
            rtf = {name: _median_seconds(run, args.repeats) / (batch * SECONDS) for name, run in parts.items()}
        front = rtf["cleaner"] + rtf["bridge"]
        print(f"| {batch} | {rtf['cleaner']:.4f} | {rtf['bridge']:.4f} | {rtf['generator']:.4f} | {rtf['student']:.4f} | "
              f"{front + rtf['generator']:.4f} | {front + rtf['student']:.4f} | {rtf['generator'] / rtf['student']:.1f} | "
              f"{rtf['wavefit']:.4f} | {rtf['cleaner'] + rtf['wavefit']:.4f} |")


if __name__ == "__main__":
    main()
