"""Per-task training and validation manifests from the prepared Common Voice splits.

    python local/split_tasks.py DATA_DIR OUT_DIR --tasks 4 --per-task 2000

Keeps the ``--tasks`` accents with the most training utterances (empty accents left out), at most
``--per-task`` training and a tenth of that validation utterances each; writes OUT/<task>_{train,val}.jsonl,
the mixtures OUT/mixture_{train,val}.jsonl (task-balanced by construction), OUT/test.jsonl (the test
utterances of the kept tasks) and OUT/tasks.txt.
"""
from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

from speech_peft.data.manifest import read_manifest, write_manifest


def slug(task: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", task.lower()).strip("_") or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--per-task", type=int, default=2000)
    args = parser.parse_args()
    splits = {name: read_manifest(args.data / f"{name}.jsonl") for name in ("train", "val", "test")}
    counts = Counter(e.task for e in splits["train"] if e.task and e.task != "unknown")
    tasks = [task for task, _ in counts.most_common(args.tasks)]
    if len(tasks) < 2:
        raise SystemExit(f"{args.data}: fewer than 2 accents with training utterances: {dict(counts)}")
    limits = {"train": args.per_task, "val": max(1, args.per_task // 10)}
    mixture = {"train": [], "val": []}
    for task in tasks:
        for split, limit in limits.items():
            entries = [e for e in splits[split] if e.task == task][:limit]
            if not entries:
                raise SystemExit(f"{args.data}/{split}.jsonl: no utterances of accent {task!r}")
            for entry in entries:
                entry.task = slug(task)
            write_manifest(entries, args.out / f"{slug(task)}_{split}.jsonl", relative=False)
            mixture[split] += entries
    for split, entries in mixture.items():
        write_manifest(entries, args.out / f"mixture_{split}.jsonl", relative=False)
    test = [e for e in splits["test"] if e.task in tasks]
    for entry in test:
        entry.task = slug(entry.task)
    write_manifest(test, args.out / "test.jsonl", relative=False)
    (args.out / "tasks.txt").write_text("".join(f"{slug(t)}\n" for t in tasks))
    print("\n".join(f"{slug(t)}: {counts[t]} training utterances" for t in tasks))


if __name__ == "__main__":
    main()
