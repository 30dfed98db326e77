"""``speech-peft degrade IN... --out OUT``: degraded copies of clean audio and a manifest pairing them."""
from __future__ import annotations

import argparse

from ..data.degrade import DegradeConfig
from ..jobs.degrade import degrade_to_disk


def add_parser(sub) -> None:
    d = sub.add_parser("degrade", help="write degraded copies of clean audio (noise, reverb, band, clip, codec, babble)")
    d.add_argument("inputs", nargs="+", help="audio files, folders, or .jsonl manifests")
    d.add_argument("--out", required=True, help="output folder (not inside an input folder)")
    d.add_argument("--noise", nargs="*", default=[], help="real noise files (coloured noise is always available)")
    d.add_argument("--rir", nargs="*", default=[], help="real room impulse responses (simulated ones otherwise)")
    d.add_argument("--babble", nargs="*", default=[],
                   help="recordings of other talkers: the babble effect mixes 3 to 6 of them (drawn only when given)")
    d.add_argument("--snr", nargs=2, type=float, default=[5.0, 30.0], metavar=("LOW", "HIGH"))
    d.add_argument("--effects", nargs="*", choices=list(DegradeConfig.effects),
                   help="the effects to draw from (default: all)")
    d.add_argument("--max-effects", type=int, default=3)
    d.add_argument("--min-effects", type=int, default=1)
    d.add_argument("--p-clean", type=float, default=0.05, help="chance a file is left clean")
    d.add_argument("--p-real", type=float, default=0.5, help="chance of a real noise/RIR over a synthetic one")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--skip-bad", action="store_true",
                   help="skip unreadable, empty, too-short, NaN or over-long inputs, listing them in OUT/rejects.tsv")
    d.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    effects = tuple(args.effects) if args.effects else DegradeConfig.effects
    config = DegradeConfig(noise_files=args.noise, rir_files=args.rir, babble_files=args.babble,
                           snr_db=tuple(args.snr), effects=effects,
                           max_effects=args.max_effects, min_effects=args.min_effects, p_clean=args.p_clean,
                           p_real=args.p_real)
    print(degrade_to_disk(args.inputs, args.out, config, seed=args.seed, skip_bad=args.skip_bad))
    return 0
