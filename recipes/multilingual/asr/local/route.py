"""Route each test utterance to a language plug-in: a copy of the test manifest whose ``adapter`` field names
the plug-in of the utterance's language, either the language given (the manifest's) or, with ``--detected``,
the language a model detected (the first segment's ``language`` in a ``speech-peft transcribe`` JSONL); the
``language`` field becomes the one routed by. An utterance whose language has no plug-in keeps no adapter.

    python route.py TEST.jsonl OUT.jsonl en=ADAPTER de=ADAPTER ... [--detected DECODED.jsonl]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from speech_peft.data.manifest import read_manifest, write_manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("test", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("plugins", nargs="+", metavar="LANG=ADAPTER")
    parser.add_argument("--detected", type=Path, help="a transcribe JSONL whose segments carry the detected language")
    args = parser.parse_args()
    plugins = dict(item.split("=", 1) for item in args.plugins)
    missing = [path for path in plugins.values() if not Path(path).is_dir()]
    if missing:
        raise SystemExit(f"route.py: no adapter folder {missing[0]}")
    detected = {}
    if args.detected:
        for line in args.detected.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            segments = row.get("segments") or [{}]
            detected[row["id"]] = segments[0].get("language")
    entries = []
    for entry in read_manifest(args.test):
        if args.detected and entry.id not in detected:
            raise SystemExit(f"route.py: {args.detected} has no transcript of {entry.id}")
        language = detected.get(entry.id) if args.detected else entry.language
        plugin = plugins.get(language or "")
        entries.append(dataclasses.replace(entry, language=language,
                                           adapter=str(Path(plugin).resolve()) if plugin else None))
    write_manifest(entries, args.out, relative=False)
    routed = sum(e.adapter is not None for e in entries)
    print(f"{args.out}: {routed} of {len(entries)} utterances routed to a plug-in")


if __name__ == "__main__":
    main()
