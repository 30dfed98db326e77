"""``speech-peft transcribe``: files, folders or manifests of recordings of any length to transcripts."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..decoding import add_arguments as add_decode_arguments
from ..decoding import given_options as given_decode_options
from ..errors import UserError

FORMATS = ("tsv", "jsonl", "srt")


def add_parser(sub) -> None:
    from ..jobs.devices import DEVICES  # a constant: the module loads torch only when a device is resolved

    t = sub.add_parser("transcribe", help="transcribe audio files, folders or manifests (any length)")
    t.add_argument("inputs", nargs="+", help="audio files, folders, or .jsonl manifests (an utterance's 'adapter' "
                                             "field names the saved adapter it is transcribed with)")
    t.add_argument("--model", default="whisper-tiny.en",
                   help="whisper-tiny.en, whisper-base (multilingual), a Whisper model directory, or an ASR export "
                        "(AR + adapter, diffusion)")
    t.add_argument("--language", help="multilingual Whisper: a language code (en, de, ...) or auto, detected per "
                                      "30 s window (the default); English-only models and exports: en")
    t.add_argument("--adapter", help="Whisper only: a saved adapter directory to place on the model")
    t.add_argument("--out", help="write here instead of stdout (a folder for --format srt)")
    t.add_argument("--format", choices=FORMATS,
                   help="tsv: id<TAB>text; jsonl: one object per file with segments and the speech decision; "
                        "srt: one subtitle file per input (default: from --out's suffix, else tsv)")
    t.add_argument("--timestamps", action="store_true", help="tsv: one id<TAB>start<TAB>end<TAB>text row per segment")
    t.add_argument("--no-vad", action="store_true",
                   help="no voice activity detection: long files are cut at fixed 30 s steps and silence is judged "
                        "by Whisper alone")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--beam-size", type=int, default=1, help="Whisper and AR exports: 1 is greedy")
    t.add_argument("--backend", choices=["torch", "ctranslate2"], default="torch",
                   help="ctranslate2: a CTranslate2 Whisper (a base model or speech-peft export's output), int8 by "
                        "default, the engine faster-whisper runs on")
    t.add_argument("--compute-type", choices=["float32", "int8"],
                   help="torch: float32 (default) or int8 for the vocabulary projection (faster on a CPU; transcripts "
                        "may differ slightly); ctranslate2: int8 (default) or float32 throughout")
    t.add_argument("--max-seconds", type=float, default=4 * 3600.0, help="longer files are bad inputs")
    t.add_argument("--device", choices=DEVICES, default="cpu", help="auto: a GPU when there is one")
    d = t.add_argument_group("diffusion ASR exports only (defaults: the decoding the export was trained with)")
    add_decode_arguments(d)
    t.add_argument("--skip-bad", action="store_true",
                   help="skip unreadable, empty, too-short, NaN or over-long inputs (listed in --rejects) and "
                        "transcribe the rest")
    t.add_argument("--rejects", help="file for skipped inputs and reasons (with --skip-bad)")
    t.set_defaults(func=run)


def output_format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    suffix = Path(args.out).suffix if args.out else ""
    return {".jsonl": "jsonl", ".srt": "srt"}.get(suffix, "tsv")


def run(args: argparse.Namespace) -> int:
    from ..data.inputs import gather_inputs
    from ..jobs.transcribe import format_transcripts, transcribe_files, write_transcripts

    if args.rejects and not args.skip_bad:
        raise UserError("--rejects lists skipped inputs: it needs --skip-bad")
    fmt = output_format(args)
    if fmt == "srt" and not args.out:
        raise UserError("--format srt writes one file per input: give --out FOLDER")
    decode = given_decode_options(args)
    compute_type = args.compute_type or ("int8" if args.backend == "ctranslate2" else "float32")
    entries = gather_inputs(args.inputs, args.skip_bad, args.rejects, args.max_seconds)
    transcripts = transcribe_files(entries, args.model, args.adapter, args.batch_size, args.beam_size,
                                   args.skip_bad, args.rejects, decode=decode, device=args.device,
                                   vad=not args.no_vad, compute_type=compute_type, max_seconds=args.max_seconds,
                                   backend=args.backend, language=args.language)
    if args.out:
        write_transcripts(transcripts, args.out, fmt, args.timestamps)
    else:
        print(format_transcripts(transcripts, fmt, args.timestamps), end="")
    return 0
