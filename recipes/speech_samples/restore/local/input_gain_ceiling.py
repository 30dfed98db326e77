"""The ceiling of input-gain restoration: each degraded file's bands lowered toward the clean recording's
own log-mel (what a perfect bridge would predict), through the synthesis the shipped restorer uses. What it
scores is the most any bridge can reach that way; the gap to a trained one is the bridge's, not the synthesis's.

    python local/input_gain_ceiling.py DEGRADED CLEAN OUT [--attenuation-limit-db 20]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from speech_peft.data.audio import load_audio, save_audio
from speech_peft.vocoders.input_gain import DEFAULT_LIMIT_DB, lower_toward


def main(degraded: Path, clean: Path, out: Path, limit_db: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(degraded.glob("*.wav")):
        noisy, reference = load_audio(path, 16000), load_audio(clean / path.name, 16000)
        length = min(noisy.shape[-1], reference.shape[-1])
        with torch.no_grad():
            restored = lower_toward(noisy[None, :length], reference[None, :length], limit_db=limit_db)
        save_audio(out / path.name, restored[0], 16000)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("degraded", type=Path)
    parser.add_argument("clean", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--attenuation-limit-db", type=float, default=DEFAULT_LIMIT_DB)
    args = parser.parse_args()
    main(args.degraded, args.clean, args.out, args.attenuation_limit_db)
