"""Whisper encoder on short clips: positional embeddings sliced to the clip vs padding to 30 s.

For every FSDD clip, mean-pooled final-layer features of the frozen Whisper tiny.en encoder, both
ways; then a logistic-regression probe per leave-one-speaker-out fold (fit on 5 speakers, scored on
the 6th). Prints encoder time per clip and probe accuracy for each way.

    .venv/bin/python benches/whisper_short_clips.py [--manifest exp/fsdd/cls/manifests/all.jsonl]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from tqdm import tqdm

from speech_peft.data.audio import load_audio
from speech_peft.data.manifest import read_manifest
from speech_peft.encoders.whisper import load_whisper_encoder


def features(entries, pad_to_30s: bool, batch: int = 16) -> tuple[torch.Tensor, float]:
    encoder = load_whisper_encoder("whisper-tiny.en", pad_to_30s=pad_to_30s)
    waves = [load_audio(e.audio, 16000) for e in entries]
    out, start = [], time.perf_counter()
    with torch.inference_mode():
        for i in tqdm(range(0, len(waves), batch), desc=f"pad_to_30s={pad_to_30s}"):
            chunk = waves[i:i + batch]
            lengths = torch.tensor([len(w) for w in chunk])
            padded = torch.nn.utils.rnn.pad_sequence(chunk, batch_first=True)
            enc = encoder(padded, lengths)
            mask = enc.mask.unsqueeze(-1).float()
            out.append((enc.hidden * mask).sum(1) / mask.sum(1))
    return torch.cat(out), (time.perf_counter() - start) / len(waves)


def probe_accuracy(x: torch.Tensor, y: torch.Tensor, train: torch.Tensor) -> float:
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    x = (x - mean) / std
    head = torch.nn.Linear(x.shape[1], 10)
    opt = torch.optim.LBFGS(head.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x[train]), y[train]) + 1e-3 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (head(x[~train]).argmax(-1) == y[~train]).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--manifest", default="exp/fsdd/cls/manifests/all.jsonl")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    entries = read_manifest(args.manifest)
    y = torch.tensor([int(e.label) for e in entries])
    speakers = sorted({e.speaker for e in entries})
    print(f"{len(entries)} clips, mean {statistics.mean(e.duration for e in entries):.2f} s\n")
    print("| input | encoder s / clip | probe accuracy % (mean ± std) | " + " | ".join(speakers) + " |")
    print("|---|---|---|" + "---|" * len(speakers))
    for pad in (False, True):
        x, per_clip = features(entries, pad)
        accs = [probe_accuracy(x, y, torch.tensor([e.speaker != s for e in entries])) for s in speakers]
        name = "padded to 30 s" if pad else "sliced to clip"
        print(f"| {name} | {per_clip:.4f} | {100 * statistics.mean(accs):.1f} ± {100 * statistics.stdev(accs):.1f} | "
              + " | ".join(f"{100 * a:.1f}" for a in accs) + " |", flush=True)


if __name__ == "__main__":
    main()
