"""``speech-peft shard MANIFEST OUT``: pack a manifest's audio into tar shards (WebDataset layout) for streaming."""
from __future__ import annotations

import argparse

from ..data.shards import write_shards


def add_parser(sub) -> None:
    p = sub.add_parser("shard", help="pack a manifest's audio into tar shards that training streams (data.train=OUT)")
    p.add_argument("manifest", help="a .jsonl manifest")
    p.add_argument("out", help="output folder: shard-NNNNNN.tar and shards.json")
    p.add_argument("--items-per-shard", type=int, default=1000)
    p.add_argument("--skip-bad", action="store_true", help="leave out unreadable audio, listing it in OUT/rejects.tsv")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(write_shards(args.manifest, args.out, args.items_per_shard, args.skip_bad))
    return 0
