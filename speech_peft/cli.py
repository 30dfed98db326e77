"""``speech-peft``: transcribe, score, and Lightning's verbs (fit / validate / test / predict) over Hydra configs."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

LIGHTNING_VERBS = ("fit", "validate", "test", "predict")


def _transcribe(args: argparse.Namespace) -> int:
    from .transcribe import gather_inputs, transcribe_entries, write_tsv

    decode = {"candidates": args.candidates, "schedule": tuple(args.schedule), "rule": args.rule,
              "remask": args.remask, "seed": args.seed}
    rows = transcribe_entries(gather_inputs(args.inputs), args.model, args.adapter, args.batch_size,
                              args.beam_size, args.skip_bad, args.rejects, decode=decode)
    if args.out:
        write_tsv(rows, args.out)
    else:
        for uid, text in rows.items():
            print(f"{uid}\t{text}")
    return 0


def _score_wer(args: argparse.Namespace) -> int:
    from .metrics.wer import score_files

    print(score_files(args.ref, args.hyp).summary())
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from .prepare import prepare

    for path in prepare(args.layout, args.src, args.out, args.skip_bad, long_items=tuple(args.long_items)):
        print(path)
    return 0


def _report(args: argparse.Namespace) -> int:
    if args.kind == "asr":
        from .asr_report import evaluate_all, write_asr_report

        if args.evaluate:
            evaluate_all(args.exp, args.buckets, tuple(args.ks))
        write_asr_report(args.exp, args.out, args.command)
        return 0
    if args.kind == "restore":
        from .restore_report import measure_restorer, write_restoration_report

        exp = Path(args.exp)
        if args.measure:
            restorer_dir, manifest = args.measure
            (exp / "measure.json").write_text(json.dumps(measure_restorer(restorer_dir, manifest), indent=2))
        write_restoration_report(exp, args.out, args.command)
        return 0
    from .report import write_classification_report

    write_classification_report(args.exp, args.out, args.command)
    return 0


def _degrade(args: argparse.Namespace) -> int:
    from .data.degrade import DegradeConfig
    from .degrade_cli import degrade_to_disk

    effects = tuple(args.effects) if args.effects else DegradeConfig.effects
    config = DegradeConfig(noise_files=args.noise, rir_files=args.rir, snr_db=tuple(args.snr), effects=effects,
                           max_effects=args.max_effects, min_effects=args.min_effects, p_clean=args.p_clean,
                           p_real=args.p_real)
    print(degrade_to_disk(args.inputs, args.out, config, seed=args.seed))
    return 0


def _score_quality(args: argparse.Namespace) -> int:
    from .quality_report import score_quality

    extra = {}
    for item in args.also:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"--also {item!r}: give NAME=FOLDER")
        extra[name] = folder
    score_quality(args.deg, args.out, args.ref, args.report, args.transcripts, args.plots,
                  speaker=not args.no_speaker, non_intrusive=not args.no_dnsmos, extra=extra)
    return 0


def _restore(args: argparse.Namespace) -> int:
    from .restore import restore

    print(restore(args.inputs, args.out, args.checkpoint, args.devices, args.num_nodes, args.ledger,
                  copy_synthesis=args.copy_synthesis))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speech-peft", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("transcribe", help="transcribe audio files, folders or manifests")
    t.add_argument("inputs", nargs="+", help="audio files, folders, or .jsonl manifests")
    t.add_argument("--model", default="whisper-tiny.en",
                   help="whisper-tiny.en, a Whisper model directory, or a diffusion ASR export")
    t.add_argument("--adapter", help="a saved adapter directory to apply to the model")
    t.add_argument("--out", help="write id<TAB>text here instead of stdout")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--beam-size", type=int, default=1, help="1: greedy")
    t.add_argument("--candidates", type=int, default=4, help="diffusion ASR: candidates decoded in parallel (K)")
    t.add_argument("--schedule", type=float, nargs="+", default=[1.0, 0.9, 0.85, 0.8],
                   help="diffusion ASR: mask ratio per refinement step (T = its length)")
    t.add_argument("--rule", choices=["confidence", "mbr", "rover"], default="confidence",
                   help="diffusion ASR: how one transcript is chosen among the candidates")
    t.add_argument("--remask", choices=["random", "low_confidence"], default="random")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--skip-bad", action="store_true", help="skip unreadable inputs, listing them in --rejects")
    t.add_argument("--rejects", help="file for skipped inputs and reasons (with --skip-bad)")
    t.set_defaults(func=_transcribe)

    p = sub.add_parser("prepare", help="write manifests (and folds) from a corpus layout")
    p.add_argument("layout", choices=["fsdd", "fsdd_long", "esc50", "speechcommands", "folder", "kaldi", "librispeech"])
    p.add_argument("src", help="the corpus root")
    p.add_argument("out", help="output folder for the manifests")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable files, listing them in OUT/rejects.tsv")
    p.add_argument("--long-items", type=int, nargs=2, default=[10, 5], metavar=("TRAIN", "TEST"),
                   help="fsdd_long: items per speaker and length bucket for training and test speakers")
    p.set_defaults(func=_prepare)

    d = sub.add_parser("degrade", help="write degraded copies of clean audio (noise, reverb, band, clip, codec)")
    d.add_argument("inputs", nargs="+", help="audio files, folders, or .jsonl manifests")
    d.add_argument("--out", required=True, help="output folder (not inside an input folder)")
    d.add_argument("--noise", nargs="*", default=[], help="real noise files (coloured noise is always available)")
    d.add_argument("--rir", nargs="*", default=[], help="real room impulse responses (simulated ones otherwise)")
    d.add_argument("--snr", nargs=2, type=float, default=[5.0, 30.0], metavar=("LOW", "HIGH"))
    d.add_argument("--effects", nargs="*", choices=["noise", "reverb", "band_limit", "clip", "codec"],
                   help="the effects to draw from (default: all)")
    d.add_argument("--max-effects", type=int, default=3)
    d.add_argument("--min-effects", type=int, default=1)
    d.add_argument("--p-clean", type=float, default=0.05, help="chance a file is left clean")
    d.add_argument("--p-real", type=float, default=0.5, help="chance of a real noise/RIR over a synthetic one")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_degrade)

    rs = sub.add_parser("restore", help="restore degraded speech with a trained cleaner + vocoder")
    rs.add_argument("inputs", help="a folder of audio or a .jsonl manifest")
    rs.add_argument("out", help="output folder (same relative names; never inside the input)")
    rs.add_argument("--checkpoint", required=True, help="a restorer directory (restorer.json, cleaner/, vocoder)")
    rs.add_argument("--devices", type=int, default=1, help="processes on this node (DDP when > 1)")
    rs.add_argument("--num-nodes", type=int, default=1)
    rs.add_argument("--ledger", action="store_true", help="log which process restored which input")
    rs.add_argument("--copy-synthesis", action="store_true",
                    help="cleaner off: vocode the encoder's own features (the vocoder's ceiling on clean input)")
    rs.set_defaults(func=_restore)

    r = sub.add_parser("report", help="regenerate a results table from finished runs")
    r.add_argument("kind", choices=["cls", "restore", "asr"])
    r.add_argument("exp", help="the recipe's experiment folder")
    r.add_argument("--out", required=True)
    r.add_argument("--command", default="", help="the command that made the runs, quoted in the table")
    r.add_argument("--measure", nargs=2, metavar=("RESTORER_DIR", "DEGRADED_JSONL"),
                   help="restore: first measure feature L1 and real-time factor on a degraded manifest")
    r.add_argument("--evaluate", action="store_true", help="asr: first score every system on every bucket")
    r.add_argument("--buckets", nargs="+", help="asr: which test_<bucket>.jsonl (default: all there are)")
    r.add_argument("--ks", nargs="+", type=int, default=[1, 4, 15], help="asr: candidate counts K")
    r.set_defaults(func=_report)

    s = sub.add_parser("score", help="score outputs")
    what = s.add_subparsers(dest="metric", required=True)
    w = what.add_parser("wer", help="WER/CER of id<TAB>text hypotheses against references")
    w.add_argument("--ref", required=True, help="id<TAB>text file, or a .jsonl manifest with text")
    w.add_argument("--hyp", required=True)
    w.set_defaults(func=_score_wer)
    q = what.add_parser("quality", help="PESQ, STOI, SI-SDR, DNSMOS, speaker similarity, WER: degraded vs restored")
    q.add_argument("--deg", required=True, help="folder of degraded audio")
    q.add_argument("--out", help="folder of restored audio (same relative names)")
    q.add_argument("--ref", help="folder of clean references (enables PESQ, STOI, SI-SDR)")
    q.add_argument("--report", required=True, help="folder for per_file.csv, summary.md and spectrogram PNGs")
    q.add_argument("--transcripts", help="id<TAB>text or a .jsonl manifest: adds Whisper tiny.en WER")
    q.add_argument("--also", nargs="*", default=[], metavar="NAME=FOLDER",
                   help="more conditions to score beside degraded/restored (e.g. ceiling=copy_synthesis/)")
    q.add_argument("--plots", type=int, default=3, help="files to draw spectrograms for")
    q.add_argument("--no-dnsmos", action="store_true")
    q.add_argument("--no-speaker", action="store_true")
    q.set_defaults(func=_score_quality)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if argv and argv[0] in LIGHTNING_VERBS:
        from .train import run_verb

        return run_verb(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"speech-peft: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
