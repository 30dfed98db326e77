"""Diffusion decoding (Whisfusion) against autoregressive greedy decoding with a KV cache, side by side.

For each item, alternating the systems, median over items of ``--repeats`` rounds (the first round
of each item warms up and is dropped): the frozen encoder on the clip and on 30 s of padded input
(as the AR decoder was trained), AR greedy decoding from those states (Whisper tiny.en + LoRA from the
fsdd_long recipe, or the bare model), and diffusion decoding from the clip's states under each
configuration (the Mask-CTC canvas includes the CTC head's time). Candidates run as one batch.

Inputs: the fsdd_long recipe's 20 s and 30 s test items when they exist (the target's lengths), else
the bundled read sentences joined into 5-30 s clips. Decoding ratio = AR decode / diffusion decode;
end-to-end ratio adds each system's own encoder.

    .venv/bin/python benches/decode_speed.py [--exp exp/fsdd_long/asr] [--items 4] [--repeats 3] [--threads 2]
        [--diffusion diffusion/stage2/export]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from speech_peft.asr.whisper_ar import WhisperTranscriber
from speech_peft.data.audio import load_audio
from speech_peft.data.manifest import read_manifest
from speech_peft.decoders import DecodeOptions
from speech_peft.encoders.whisper import load_whisper
from speech_peft.evaluation.asr import BEST_MASK, DECODINGS, MASK_CTC
from speech_peft.tasks.asr import WhisperARFineTune
from speech_peft.tasks.diffusion_asr import DiffusionASR

SENTENCES = Path(__file__).resolve().parents[1] / "data" / "speech_samples" / "asr"


def inputs(exp: Path, items: int) -> dict[str, list[torch.Tensor]]:
    found = {b: exp / "data" / f"test_{b}.jsonl" for b in ("20s", "30s")}
    if all(p.exists() for p in found.values()):
        return {b: [load_audio(e.audio)[None] for e in read_manifest(p)[:items]] for b, p in found.items()}
    sentences = [load_audio(p, 16000) for p in sorted(SENTENCES.glob("*.wav"))]
    joined = torch.cat([torch.cat([s, torch.zeros(4000)]) for s in sentences * 2])
    return {f"{n}s": [joined[: n * 16000][None]] for n in (5, 10, 20, 30)}


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exp", type=Path, default=Path("exp/fsdd_long/asr"))
    parser.add_argument("--items", type=int, default=4, help="items per bucket")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--diffusion", default="diffusion/stage2/export",
                        help="the diffusion export, under --exp (digits_long: diffusion_lora/export)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    diffusion_export = args.exp / args.diffusion
    ar_export = args.exp / "ar_lora" / "export"
    if not diffusion_export.is_dir():
        raise SystemExit(f"{diffusion_export}: no trained diffusion model (run recipes/fsdd_long/asr/run.sh or "
                         "recipes/digits_long/asr/run.sh)")
    diffusion = DiffusionASR.from_export(diffusion_export)
    ar = (WhisperARFineTune.from_export(ar_export).transcriber if ar_export.is_dir()
          else WhisperTranscriber(load_whisper("whisper-tiny.en")))
    configs = {f"{name} K={k}": DecodeOptions(candidates=k, **DECODINGS[name]) for name in (MASK_CTC, BEST_MASK)
               for k in args.ks}
    print(f"CPU, {args.threads} threads; median over items of the median of {args.repeats} rounds; "
          f"AR: {'Whisper tiny.en + LoRA' if ar_export.is_dir() else 'Whisper tiny.en'} greedy, KV cache\n")
    print("| input | encoder clip (s) | encoder 30 s (s) | AR decode (s) | AR tokens | "
          + " | ".join(f"{name} (s) | decode ratio | end-to-end ratio" for name in configs) + " |")
    print("|---|---|---|---|---|" + "---|---|---|" * len(configs))
    with torch.inference_mode():
        for bucket, waves in inputs(args.exp, args.items).items():
            per_item: dict[str, list[float]] = {}
            tokens = []
            for wave in waves:
                lengths = torch.tensor([wave.shape[-1]])
                times: dict[str, list[float]] = {}
                for _ in range(args.repeats + 1):
                    took, out = timed(lambda: diffusion.encoder(wave, lengths))
                    times.setdefault("enc_clip", []).append(took)
                    took, padded = timed(lambda: ar.encode(wave))
                    times.setdefault("enc_30", []).append(took)
                    took, ids = timed(lambda: ar.greedy(wave, padded))
                    times.setdefault("ar", []).append(took)
                    for name, options in configs.items():
                        took, _ = timed(lambda o=options: diffusion.decode_states(out.hidden, out.mask, lengths, o))
                        times.setdefault(name, []).append(took)
                tokens.append(len(ids[0]))
                for name, values in times.items():
                    per_item.setdefault(name, []).append(statistics.median(values[1:]))
            med = {name: statistics.median(values) for name, values in per_item.items()}
            ar_total = med["enc_30"] + med["ar"]
            cells = " | ".join(f"{med[n]:.3f} | {med['ar'] / med[n]:.1f} | {ar_total / (med['enc_clip'] + med[n]):.1f}"
                               for n in configs)
            print(f"| {bucket} (x{len(waves)}) | {med['enc_clip']:.3f} | {med['enc_30']:.3f} | {med['ar']:.3f} | "
                  f"{statistics.median(tokens):.0f} | {cells} |", flush=True)
    print("\nratio > 1: diffusion is faster. Decode ratio: decoding alone (the CTC head counted for Mask-CTC); "
          "end-to-end: AR with its 30 s encoder against diffusion with the clip's encoder.")


if __name__ == "__main__":
    main()
