"""Distil the frozen HiFi-GAN V1 into the fast student (``vocoders/student.py``).

The teacher maps any log-mel to a waveform, so pairs are unlimited: log-mels of clean speech (and, so
the student sees what it will be given, the bridge's predictions of them) are cut into random
crops, shifted in level and dequantised, and the teacher's waveform for each crop is the target. The
loss is multi-resolution STFT (spectral convergence + log magnitude) plus an L2 on the power-law
compressed complex spectrum, which pins the phase where there is energy — no discriminator.

    python -m speech_peft.vocoders.distill corpus MANIFEST... --out mels.npz [--restorer DIR]
    python -m speech_peft.vocoders.distill train --mels mels.npz --out DIR --seconds 420 [--device cuda]

Log-mels are stored as 8-bit codes (a 0.063 step in natural-log units): teacher and student read the
same dequantised values, so the coding costs the distillation nothing and a corpus an hour long
fits in 25 MB.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from ..fileio import atomic_write, write_json
from . import hifigan
from .hifigan import LOG_FLOOR
from .student import StudentConfig, StudentVocoder

CODE_STEP = 16.0 / 255  # codes 0..255 cover [LOG_FLOOR, LOG_FLOOR + 16]
RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))
COMPRESSION = 0.3


@dataclass
class MelCorpus:
    codes: np.ndarray  # (80, total frames) uint8
    offsets: np.ndarray  # (utterances + 1,) frame offsets
    validation: np.ndarray  # (utterances,) bool: held out from training

    @classmethod
    def from_mels(cls, mels: list[Tensor], validation: list[bool]) -> MelCorpus:
        codes = [torch.clamp(torch.round((m - LOG_FLOOR) / CODE_STEP), 0, 255).to(torch.uint8).numpy() for m in mels]
        offsets = np.cumsum([0] + [c.shape[1] for c in codes])
        return cls(np.concatenate(codes, axis=1), offsets, np.array(validation, dtype=bool))

    def save(self, path: str | Path) -> Path:
        def write(tmp: str) -> None:
            with open(tmp, "wb") as file:
                np.savez_compressed(file, codes=self.codes, offsets=self.offsets, validation=self.validation)

        return atomic_write(path, write)

    @classmethod
    def load(cls, path: str | Path) -> MelCorpus:
        with np.load(path, allow_pickle=False) as data:
            return cls(data["codes"], data["offsets"], data["validation"])

    def utterance(self, index: int) -> Tensor:
        start, end = self.offsets[index], self.offsets[index + 1]
        return torch.from_numpy(self.codes[:, start:end].astype(np.float32)) * CODE_STEP + LOG_FLOOR

    def indices(self, validation: bool) -> list[int]:
        return [i for i in range(len(self.validation)) if bool(self.validation[i]) == validation]

    @property
    def seconds(self) -> float:
        return self.codes.shape[1] * hifigan.HOP / hifigan.SAMPLE_RATE


def build_mel_corpus(manifests: list[str], restorer_dir: str | None = None, val_fraction: float = 0.05,
                     seed: int = 0) -> MelCorpus:
    """Teacher log-mels of every wideband clip (16 kHz or more); with a restorer, also its bridge's
    prediction of each from the clean features. Speakers in ``val_fraction`` go to validation."""
    from ..data.audio import load_audio
    from ..data.manifest import read_manifest
    from .hifigan import target_mel

    entries = [e for path in manifests for e in read_manifest(path) if e.sample_rate >= 16000]
    speakers = sorted({e.speaker or e.id for e in entries})
    rng = np.random.default_rng(seed)
    held_out = set(rng.choice(speakers, max(1, round(len(speakers) * val_fraction)), replace=False).tolist())
    restorer = None
    if restorer_dir:
        from .restorer import Restorer
        restorer = Restorer.from_export(restorer_dir)
    if not entries:
        raise UserError(f"{', '.join(manifests)}: no clips at 16 kHz or more to take log-mels from")
    mels, validation = [], []
    with torch.inference_mode():
        for entry in entries:
            wave = load_audio(entry.audio)[None]
            is_val = (entry.speaker or entry.id) in held_out
            mels.append(target_mel(wave)[0])
            validation.append(is_val)
            if restorer is not None:
                feats = restorer.encoder(wave).hidden
                mels.append(restorer.vocoder.mel(feats, wave.shape[-1], waves=wave)[0].clamp(min=LOG_FLOOR))
                validation.append(is_val)
    return MelCorpus.from_mels(mels, validation)


def _stft(wave: Tensor, n_fft: int, hop: int) -> Tensor:
    return torch.stft(wave, n_fft, hop, window=torch.hann_window(n_fft, device=wave.device), return_complex=True)


def _compress(z: Tensor) -> Tensor:
    return torch.polar((z.abs() + 1e-8).pow(COMPRESSION), z.angle())


def distillation_loss(student_wave: Tensor, teacher_wave: Tensor) -> dict[str, Tensor]:
    """Spectral convergence and log magnitude averaged over ``RESOLUTIONS``; the compressed complex L2 at
    the student's own frame (n_fft 1024, hop 256)."""
    sc = log_mag = complex_l2 = 0.0
    for n_fft, hop in RESOLUTIONS:
        s_spec, t_spec = _stft(student_wave, n_fft, hop), _stft(teacher_wave, n_fft, hop)
        s, t = s_spec.abs(), t_spec.abs()
        sc = sc + (torch.linalg.norm(t - s, dim=(1, 2)) / torch.linalg.norm(t, dim=(1, 2)).clamp(min=1e-7)).mean()
        log_mag = log_mag + (torch.log(s + 1e-5) - torch.log(t + 1e-5)).abs().mean()
        if (n_fft, hop) == (hifigan.N_FFT, hifigan.HOP):
            complex_l2 = (_compress(s_spec) - _compress(t_spec)).abs().square().mean()
    n = len(RESOLUTIONS)
    return {"sc": sc / n, "log_mag": log_mag / n, "complex": complex_l2}


def _batch(corpus: MelCorpus, pool: list[int], size: int, frames: int, generator: torch.Generator) -> Tensor:
    """``size`` random crops of ``frames`` from the utterances in ``pool`` (each at least that long)."""
    picks = torch.randint(len(pool), (size,), generator=generator).tolist()
    crops = []
    for k in picks:
        mel = corpus.utterance(pool[k])
        start = int(torch.randint(mel.shape[1] - frames + 1, (1,), generator=generator))
        crops.append(mel[:, start:start + frames])
    mels = torch.stack(crops)
    mels = mels + (torch.rand(mels.shape, generator=generator) - 0.5) * CODE_STEP  # dequantise
    gain = torch.empty(size, 1, 1).uniform_(-1.5, 0.5, generator=generator)  # level, in natural-log units
    return torch.clamp(mels + gain, min=LOG_FLOOR)


def distill(corpus: MelCorpus, out_dir: str | Path, *, seconds: float = 0.0, steps: int | None = None,
            device: str = "cpu", batch: int = 32,
            frames: int = 64, margin: int = 8, lr: float = 5e-4, config: StudentConfig = StudentConfig(),
            seed: int = 0, log_every: int = 500) -> dict:
    """Train for ``steps``, or for about ``seconds`` of wall time (the step count is then fixed after a
    timed probe, so the learning-rate schedule completes); export the student to ``out_dir`` and
    return the summary."""
    torch.manual_seed(seed)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    generator = torch.Generator().manual_seed(seed)
    teacher = hifigan.load_hifigan("universal").to(device)
    student = StudentVocoder(config).to(device).train()
    optimiser = torch.optim.AdamW(student.parameters(), lr=lr, betas=(0.8, 0.9), weight_decay=0.01)
    span = frames + 2 * margin
    train_pool = [i for i in corpus.indices(validation=False) if corpus.offsets[i + 1] - corpus.offsets[i] >= span]
    if not train_pool:
        raise UserError(f"no training utterance in the mel corpus is {span} frames long "
                         f"({span * hifigan.HOP / hifigan.SAMPLE_RATE:.2f} s): give longer clips or fewer frames")
    keep = slice(margin * hifigan.HOP, (margin + frames) * hifigan.HOP)

    def step(lr_now: float) -> dict[str, float]:
        mels = _batch(corpus, train_pool, batch, span, generator).to(device)
        with torch.no_grad():
            target = teacher(mels)[:, keep]
        losses = distillation_loss(student(mels)[:, keep], target)
        total = sum(losses.values())
        for group in optimiser.param_groups:
            group["lr"] = lr_now
        optimiser.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimiser.step()
        return {k: float(v.detach()) for k, v in losses.items()}

    def synchronise() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    start = time.perf_counter()
    if steps is not None:
        total_steps = steps
    else:
        for _ in range(10):  # warm-up (kernel selection), not timed
            step(lr * 0.01)
        synchronise()
        probe_start, probe_steps = time.perf_counter(), 20
        for _ in range(probe_steps):
            step(lr * 0.01)
        synchronise()
        per_step = (time.perf_counter() - probe_start) / probe_steps
        total_steps = max(1, int((seconds - (time.perf_counter() - start)) / per_step))
        print(f"{per_step * 1000:.1f} ms/step -> {total_steps} steps", flush=True)
    warmup = max(1, min(500, total_steps // 10))
    history = []
    for index in range(total_steps):
        progress = index / total_steps
        lr_now = lr * min(1.0, (index + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * progress))
        losses = step(lr_now)
        if index % log_every == 0 or index == total_steps - 1:
            history.append({"step": index, **losses})
            print(json.dumps(history[-1]), flush=True)
    student.eval()
    summary = {"steps": total_steps, "seconds": round(time.perf_counter() - start, 1), "batch": batch,
               "frames": frames, "corpus_seconds": round(corpus.seconds, 1), "device": device,
               "validation": validate(student, teacher, corpus, device), "history": history}
    student.cpu().export(out_dir, {"teacher": "hifigan-v1-universal", "distillation": {
        k: summary[k] for k in ("steps", "batch", "frames", "corpus_seconds", "validation")}})
    return summary


@torch.no_grad()
def validate(student: StudentVocoder, teacher: torch.nn.Module, corpus: MelCorpus, device: str) -> dict:
    """Mean losses over whole held-out utterances (voices never trained on)."""
    totals: dict[str, float] = {}
    pool = corpus.indices(validation=True)
    for index in pool:
        mel = corpus.utterance(index)[None].to(device)
        for name, value in distillation_loss(student(mel), teacher(mel)).items():
            totals[name] = totals.get(name, 0.0) + float(value) / len(pool)
    return {k: round(v, 4) for k, v in totals.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m speech_peft.vocoders.distill", description=__doc__.split("\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    corpus = verbs.add_parser("corpus", help="log-mels of clean speech (and a restorer's bridge predictions)")
    corpus.add_argument("manifests", nargs="+")
    corpus.add_argument("--out", required=True)
    corpus.add_argument("--restorer", help="also store this restorer's bridge predictions of each clip")
    train = verbs.add_parser("train", help="distil the student from the frozen HiFi-GAN V1")
    train.add_argument("--mels", required=True)
    train.add_argument("--out", required=True)
    group = train.add_mutually_exclusive_group()
    group.add_argument("--seconds", type=float, default=420, help="wall time to train for (default 420)")
    group.add_argument("--steps", type=int, help="train exactly this many steps instead")
    train.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    train.add_argument("--batch", type=int, default=32)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--lr", type=float, default=5e-4)
    args = parser.parse_args(argv)
    if args.verb == "corpus":
        built = build_mel_corpus(args.manifests, args.restorer)
        built.save(args.out)
        print(f"{args.out}: {built.seconds / 60:.1f} min of log-mel, {len(built.validation)} utterances "
              f"({int(built.validation.sum())} held out)")
    else:
        summary = distill(MelCorpus.load(args.mels), args.out, seconds=args.seconds, steps=args.steps, device=args.device,
                          batch=args.batch, seed=args.seed, lr=args.lr)
        print(json.dumps({k: v for k, v in summary.items() if k != "history"}))
        write_json(Path(args.out) / "distillation.json", summary)


if __name__ == "__main__":
    main()
