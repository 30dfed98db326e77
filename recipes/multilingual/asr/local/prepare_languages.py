"""Stage 0 of the multilingual recipe: read sentences in English, German, French and Spanish spoken by
espeak-ng voices, with exact transcripts, plus the bundled real English recordings.

Per language the last ``--test-sentences`` sentences are test sentences, never trained on; voice variants
m7 and f4 speak the test sets only, so a test voice is never a training voice at another rate or pitch.
Writes EXP/data/{LANG}_{train,val,test}.jsonl, train.jsonl and val.jsonl (every language) and test.jsonl
(every language's test set and the real English sentences); ``language`` is each item's language and
``task`` its test set (en_tts, de_tts, ..., en_real).

    python recipes/multilingual/asr/local/prepare_languages.py EXP [--train-voices 10] [--per-voice 8]
"""
from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

from speech_peft.data.audio import probe
from speech_peft.data.manifest import Entry, write_manifest
from speech_peft.data.tts_voices import available_voices, synthesise

ROOT = Path(__file__).resolve().parents[4]
SENTENCES = {"en": "read_sentences.txt", "de": "read_sentences_de.txt", "fr": "read_sentences_fr.txt",
             "es": "read_sentences_es.txt"}
TEST_VARIANTS = ("+m7", "+f4")


def entry(path: Path, uid: str, text: str, language: str, speaker: str, task: str) -> Entry:
    frames, rate, _ = probe(path)
    return Entry(uid, str(path.resolve()), round(frames / rate, 4), rate, text=text, speaker=speaker, task=task,
                 language=language)


def language_splits(out: Path, language: str, args: argparse.Namespace) -> dict[str, list[Entry]]:
    lines = [s.strip() for s in (ROOT / "data" / "sentences" / SENTENCES[language]).read_text().splitlines() if s.strip()]
    train_lines, test_lines = lines[:-args.test_sentences], lines[-args.test_sentences:]
    rng = random.Random(f"{args.seed}-{language}")
    voices = [v for v in available_voices(language=language) if v.engine == "espeak-ng"]
    held = [v for v in voices if v.name.endswith(TEST_VARIANTS)]
    rest = [v for v in voices if not v.name.endswith(TEST_VARIANTS)]
    rng.shuffle(held), rng.shuffle(rest)
    plan = {"train": (rest[:args.train_voices], train_lines, args.per_voice),
            "val": (rest[args.train_voices:args.train_voices + args.val_voices], train_lines, args.per_voice),
            "test": (held[:args.test_voices], test_lines, len(test_lines))}
    splits = {}
    for split, (chosen, sentences, count) in plan.items():
        items = []
        for voice in chosen:
            for index in sorted(rng.sample(range(len(sentences)), count)):
                uid = f"{language}_{voice.id}_{split}{index:03d}"
                path = synthesise(voice, sentences[index], out / "audio" / language / f"{uid}.wav")
                items.append(entry(path, uid, sentences[index], language, voice.id, f"{language}_tts"))
        splits[split] = items
    return splits


def real_english() -> list[Entry]:
    folder = ROOT / "data" / "speech_samples" / "asr"
    with open(folder / "transcripts.tsv", newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.reader(handle, delimiter="\t") if r]
    return [entry(folder / f"{uid}.wav", f"en_real_{uid}", text, "en", uid.split("_")[0], "en_real")
            for uid, text in rows if (folder / f"{uid}.wav").is_file()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exp", type=Path)
    parser.add_argument("--languages", nargs="+", default=list(SENTENCES))
    parser.add_argument("--train-voices", type=int, default=10)
    parser.add_argument("--val-voices", type=int, default=2)
    parser.add_argument("--test-voices", type=int, default=3)
    parser.add_argument("--per-voice", type=int, default=8)
    parser.add_argument("--test-sentences", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = args.exp / "data"
    combined: dict[str, list[Entry]] = {"train": [], "val": [], "test": []}
    for language in args.languages:
        for split, items in language_splits(args.exp, language, args).items():
            write_manifest(items, data / f"{language}_{split}.jsonl", relative=False)
            combined[split] += items
    combined["test"] += real_english() if "en" in args.languages else []
    for split, items in combined.items():
        write_manifest(items, data / f"{split}.jsonl", relative=False)
        print(f"{split}: {len(items)} items")


if __name__ == "__main__":
    main()
