"""``speech-peft merge-adapters A B ... --method mera --out DIR``: several trained adapters as one."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    m = sub.add_parser("merge-adapters", help="merge saved adapters of the same method and places into one")
    m.add_argument("adapters", nargs="+", help="saved adapter folders")
    m.add_argument("--method", default="average", choices=["average", "task_arithmetic", "ties", "dare", "mera"],
                   help="mera: align bottleneck units by permutation before averaging")
    m.add_argument("--out", required=True, help="folder for the merged adapter")
    m.add_argument("--weights", type=float, nargs="+", help="task_arithmetic: one weight per adapter (default 1/N)")
    m.add_argument("--density", type=float, default=0.2, help="ties: the fraction of each adapter's values kept")
    m.add_argument("--drop", type=float, default=0.5, help="dare: the probability of dropping a value")
    m.add_argument("--seed", type=int, default=0, help="dare: the drops' seed")
    m.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..adapters.merging import merge_adapters

    print(merge_adapters(args.adapters, args.out, args.method, args.weights, args.density, args.drop, args.seed))
    return 0
