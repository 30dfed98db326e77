"""``speech-peft report cls|restore|asr EXP --out FILE``: a results table regenerated from finished runs.
Each kind is its own sub-command with its own options."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError
from ..evaluation.asr import BEST_MASK, MASK_CTC, evaluate_all
from ..evaluation.multitask import evaluate_multitask
from ..evaluation.restoration import measure_restorer
from ..fileio import write_json
from ..reports.asr import write_asr_report
from ..reports.classification import write_classification_report
from ..reports.digits_asr import write_digits_report
from ..reports.multitask import write_multitask_report
from ..reports.restoration import write_restoration_report


def add_parser(sub) -> None:
    r = sub.add_parser("report", help="regenerate a results table from finished runs (cls, restore, asr, multitask)")
    kinds = r.add_subparsers(dest="kind", required=True)

    def common(kind: str, help: str) -> argparse.ArgumentParser:
        p = kinds.add_parser(kind, help=help)
        p.add_argument("exp", help="the recipe's experiment folder")
        p.add_argument("--out", required=True, help="the RESULTS.md to write")
        p.add_argument("--command", default="", help="the command that made the runs, quoted in the table")
        return p

    common("cls", "classification: accuracy per method and fold").set_defaults(func=run_cls)
    rs = common("restore", "restoration: feature distance, audio quality, speed, training")
    rs.add_argument("--measure", nargs=2, metavar=("RESTORER_EXPORT", "DEGRADED_JSONL"),
                    help="first measure feature L1 and real-time factor on a degraded manifest")
    rs.set_defaults(func=run_restore)
    asr = common("asr", "ASR: AR and diffusion decoding per length bucket")
    asr.add_argument("--evaluate", action="store_true", help="first score every system on every bucket")
    asr.add_argument("--buckets", nargs="+", help="which test_<bucket>.jsonl (default: all there are)")
    asr.add_argument("--candidates", type=int, help="K for the multi-candidate rows (default 4)")
    asr.add_argument("--model", default="whisper-tiny.en",
                     help="the Whisper the systems were trained on, scored zero-shot beside them")
    asr.add_argument("--layout", choices=("fsdd_long", "digits_long"), default="fsdd_long",
                     help="which recipe's tables: fsdd_long (buckets, ablations) or digits_long (one table per "
                          "test family)")
    asr.set_defaults(func=run_asr)
    fam = common("family", "adapter family: methods with encoder time, low-bit storage, merging (into --out)")
    fam.add_argument("--methods", nargs="+", default=["parallel", "sparse", "sparse_large", "mosa"])
    fam.add_argument("--bits", type=int, nargs="*", default=[8, 4, 2, 1],
                     help="low-bit storage table for these bit counts (none: no table)")
    fam.add_argument("--merge-fold", help="the fold whose adapters from other seeds are merged")
    fam.add_argument("--merge-runs", nargs="*", default=[], help="run folders of that fold from other seeds")
    fam.add_argument("--section", choices=["sparse", "routed"], default="sparse",
                     help="which family section of --out the tables replace")
    fam.set_defaults(func=run_family)
    mt = common("multitask", "multi-task ASR: every system on every test set, fusion-weight plots")
    mt.add_argument("--evaluate", action="store_true", help="first transcribe every test set with every system")
    mt.set_defaults(func=run_multitask)


def run_cls(args: argparse.Namespace) -> int:
    write_classification_report(args.exp, args.out, args.command)
    return 0


def run_family(args: argparse.Namespace) -> int:
    from ..evaluation.adapter_family import measure
    from ..reports.adapter_family import write_family_report

    result = measure(args.exp, args.methods, bits=tuple(args.bits), merge_fold=args.merge_fold,
                     merge_runs=args.merge_runs)
    print(write_family_report(args.exp, args.out, result, args.section).read_text())
    return 0


def run_restore(args: argparse.Namespace) -> int:
    if args.measure:
        restorer_dir, manifest = args.measure
        write_json(Path(args.exp) / "measure.json", measure_restorer(restorer_dir, manifest))
    write_restoration_report(args.exp, args.out, args.command)
    return 0


def run_multitask(args: argparse.Namespace) -> int:
    if args.evaluate:
        evaluate_multitask(args.exp)
    write_multitask_report(args.exp, args.out, args.command)
    return 0


def run_asr(args: argparse.Namespace) -> int:
    if not args.evaluate and (args.buckets or args.candidates):
        raise UserError("--buckets and --candidates choose what --evaluate scores: give --evaluate too")
    digits = args.layout == "digits_long"
    if args.evaluate:  # digits_long's tables show the two decodings the fsdd_long ablation chose
        evaluate_all(args.exp, args.buckets, args.candidates or 4, args.model,
                     [BEST_MASK, MASK_CTC] if digits else None)
    if digits:
        write_digits_report(args.exp, args.out, args.command)
    else:
        write_asr_report(args.exp, args.out, args.command, args.model)
    return 0
