"""Diffusion decoding (Whisfusion) against autoregressive greedy decoding on the same frozen encoder.

Inputs: real read sentences (data/speech_samples/asr) joined into 5, 10, 20 and 30 s clips. For each
length, alternating the systems, median of ``--repeats``: the encoder alone (short input for the
diffusion path; padded to 30 s for the AR path, as Whisper decodes), AR greedy with a KV cache
(Whisper tiny.en), and parallel diffusion decoding with K candidates and T=4 steps over L positions
(the diffusion decoder initialised from Whisper tiny.en's decoder plus cross-attention adapters;
trained and untrained weights cost the same). With ``--tokens-per-second r`` each clip's canvas is
1 + ceil(r x seconds) positions (at most L), as a model trained with that rate decodes. AR tokens/s
counts the transcript tokens it produced.

    .venv/bin/python benches/decode_speed.py [--repeats 3] [--threads 2] [--length 128] [--ks 1 4 15]
                                             [--tokens-per-second 3]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from speech_peft.adapters import CrossAttentionConfig, add_adapter
from speech_peft.asr.whisper_ar import WhisperTranscriber
from speech_peft.data.audio import load_audio
from speech_peft.decoders import DecodeOptions, canvas_lengths, diffusion_decode, from_whisper
from speech_peft.encoders.whisper import load_whisper, load_whisper_encoder

DATA = Path(__file__).resolve().parents[1] / "data" / "speech_samples" / "asr"


def clips() -> dict[int, torch.Tensor]:
    sentences = [load_audio(p, 16000) for p in sorted(DATA.glob("*.wav"))]
    joined = torch.cat([torch.cat([s, torch.zeros(4000)]) for s in sentences * 2])
    return {n: joined[: n * 16000][None] for n in (5, 10, 20, 30)}


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--length", type=int, default=128, help="L, the diffusion decoder's positions")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 15])
    parser.add_argument("--tokens-per-second", type=float, help="canvas per clip from its duration (default: L)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_whisper("whisper-tiny.en")
    ar = WhisperTranscriber(bundle)
    encoder = load_whisper_encoder("whisper-tiny.en")
    decoder = from_whisper(bundle.model, args.length).eval()
    add_adapter(decoder, CrossAttentionConfig(memory_dim=encoder.dim, num_heads=6), name="xattn")
    rate = args.tokens_per_second
    canvas_note = f"canvas 1 + ceil({rate:g} x seconds), at most {args.length}" if rate else f"L={args.length}"
    print(f"CPU, {args.threads} threads, median of {args.repeats}; diffusion T=4, {canvas_note}\n")
    print("| input | encoder short (s) | encoder 30 s (s) | AR greedy (s) | AR tokens/s | "
          + " | ".join(f"diffusion K={k} (s) | ratio AR / K={k}" for k in args.ks) + " |")
    print("|---|---|---|---|---|" + "---|---|" * len(args.ks))
    with torch.inference_mode():
        for seconds, wave in clips().items():
            lengths = torch.tensor([wave.shape[-1]])
            canvas = canvas_lengths(lengths / 16000, rate, args.length) if rate else None
            times: dict[str, list[float]] = {}
            tokens = 0
            for _ in range(args.repeats + 1):  # the first round warms up and is dropped
                rounds = {"enc_short": lambda: encoder(wave, lengths), "enc_30": lambda: ar.encode(wave),
                          "ar": lambda: ar.greedy(wave)}
                for k in args.ks:
                    rounds[f"k{k}"] = lambda k=k: diffusion_decode(decoder, *_memory(encoder, wave, lengths),
                                                                   DecodeOptions(candidates=k), canvas)
                for name, fn in rounds.items():
                    took, out = timed(fn)
                    times.setdefault(name, []).append(took)
                    if name == "ar":
                        tokens = len(out[0])
            med = {name: statistics.median(values[1:]) for name, values in times.items()}
            cells = " | ".join(f"{med[f'k{k}']:.2f} | {med['ar'] / med[f'k{k}']:.2f}" for k in args.ks)
            print(f"| {seconds} s | {med['enc_short']:.3f} | {med['enc_30']:.3f} | {med['ar']:.2f} | "
                  f"{tokens / med['ar']:.0f} | {cells} |", flush=True)
    print("\nAR greedy and diffusion times include their encoder (30 s padded for AR, the clip itself for "
          "diffusion); ratio > 1: diffusion is faster.")


def _memory(encoder, wave, lengths):
    out = encoder(wave, lengths)
    return out.hidden, out.mask


if __name__ == "__main__":
    main()
