"""``speech-peft score wer|quality``: one metric implementation each, shared with the reports."""
from __future__ import annotations

import argparse

from ..errors import UserError
from ..metrics.wer import GROUP_FIELDS, group_table, score_by, score_files
from ..reports.quality import DEFAULT_ASR, score_quality


def add_parser(sub) -> None:
    s = sub.add_parser("score", help="score outputs (wer, quality)")
    what = s.add_subparsers(dest="metric", required=True)
    w = what.add_parser("wer", help="WER/CER of id<TAB>text hypotheses against references")
    w.add_argument("--ref", required=True, help="id<TAB>text file, or a .jsonl manifest with text")
    w.add_argument("--hyp", required=True)
    w.add_argument("--by", choices=GROUP_FIELDS,
                   help="also one row per value of this manifest field (--ref must be a .jsonl manifest)")
    w.set_defaults(func=run_wer)
    q = what.add_parser("quality", help="PESQ, STOI, SI-SDR, DNSMOS, speaker similarity, WER: degraded vs restored")
    q.add_argument("--deg", required=True, help="folder of degraded audio")
    q.add_argument("--out", help="folder of restored audio (same relative names)")
    q.add_argument("--ref", help="folder of clean references (enables PESQ, STOI, SI-SDR)")
    q.add_argument("--report", required=True, help="folder for per_file.csv, summary.md and spectrogram PNGs")
    q.add_argument("--transcripts", help="id<TAB>text or a .jsonl manifest: adds the WER of each --asr model")
    q.add_argument("--asr", nargs="+", default=[DEFAULT_ASR], metavar="MODEL",
                   help="Whisper models for the WER (greedy, English): whisper-tiny.en (column wer), whisper-base "
                        "(column wer_whisper-base), a model directory")
    q.add_argument("--also", nargs="*", default=[], metavar="NAME=FOLDER",
                   help="more conditions to score beside degraded/restored (e.g. ceiling=copy_synthesis/)")
    q.add_argument("--plots", type=int, default=3, help="files to draw spectrograms for")
    q.add_argument("--no-dnsmos", action="store_true")
    q.add_argument("--no-speaker", action="store_true")
    q.add_argument("--skip-bad", action="store_true",
                   help="leave out files that cannot be read or have no counterpart, listing them in REPORT/rejects.tsv")
    q.set_defaults(func=run_quality)


def run_wer(args: argparse.Namespace) -> int:
    if args.by:
        results = score_by(args.ref, args.hyp, args.by)
        print(f"normaliser: {results['all'].normaliser}\n{group_table(results, args.by)}")
    else:
        print(score_files(args.ref, args.hyp).summary())
    return 0


def run_quality(args: argparse.Namespace) -> int:
    extra = {}
    for item in args.also:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise UserError(f"--also {item!r}: give NAME=FOLDER")
        extra[name] = folder
    score_quality(args.deg, args.out, args.ref, args.report, args.transcripts, args.plots,
                  speaker=not args.no_speaker, non_intrusive=not args.no_dnsmos, extra=extra,
                  skip_bad=args.skip_bad, asr_models=tuple(args.asr))
    return 0
