"""``speech-peft transcribe``: files, folders or manifests to ``id<TAB>text``."""
from __future__ import annotations

import argparse

from ..data.inputs import gather_inputs
from ..jobs.devices import DEVICES
from ..jobs.transcribe import transcribe_entries, write_tsv

DIFFUSION_OPTIONS = ("candidates", "schedule", "rule", "remask", "init", "hold_eos", "distinct_neighbours", "seed")


def add_parser(sub) -> None:
    t = sub.add_parser("transcribe", help="transcribe audio files, folders or manifests")
    t.add_argument("inputs", nargs="+", help="audio files, folders, or .jsonl manifests")
    t.add_argument("--model", default="whisper-tiny.en",
                   help="whisper-tiny.en, a Whisper model directory, or an ASR export (AR + adapter, diffusion)")
    t.add_argument("--adapter", help="Whisper only: a saved adapter directory to place on the model")
    t.add_argument("--out", help="write id<TAB>text here instead of stdout")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--beam-size", type=int, default=1, help="Whisper and AR exports: 1 is greedy")
    t.add_argument("--device", choices=DEVICES, default="cpu", help="auto: a GPU when there is one")
    d = t.add_argument_group("diffusion ASR exports only (defaults: the decoding the export was trained with)")
    d.add_argument("--candidates", type=int, help="candidates decoded in parallel, K")
    d.add_argument("--schedule", type=float, nargs="+", help="mask ratio at each refinement step, T = its length")
    d.add_argument("--rule", choices=["confidence", "mbr", "rover"], help="how one transcript is chosen")
    d.add_argument("--remask", choices=["random", "low_confidence", "progressive"])
    d.add_argument("--init", choices=["mask", "ctc"], help="ctc: start from the CTC head's hypothesis (Mask-CTC)")
    d.add_argument("--hold-eos", action="store_true", default=None, help="progressive: end of text only at the last step")
    d.add_argument("--distinct-neighbours", action="store_true", default=None,
                   help="progressive: never commit two equal neighbouring tokens in one step")
    d.add_argument("--seed", type=int, help="default 0")
    t.add_argument("--skip-bad", action="store_true", help="skip unreadable inputs, listing them in --rejects")
    t.add_argument("--rejects", help="file for skipped inputs and reasons (with --skip-bad)")
    t.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.rejects and not args.skip_bad:
        raise ValueError("--rejects lists skipped inputs: it needs --skip-bad")
    given = {k: getattr(args, k) for k in DIFFUSION_OPTIONS if getattr(args, k) is not None}
    decode = {k: tuple(v) if k == "schedule" else v for k, v in given.items()} or None
    rows = transcribe_entries(gather_inputs(args.inputs), args.model, args.adapter, args.batch_size,
                              args.beam_size, args.skip_bad, args.rejects, decode=decode, device=args.device)
    if args.out:
        write_tsv(rows, args.out)
    else:
        for uid, text in rows.items():
            print(f"{uid}\t{text}")
    return 0
