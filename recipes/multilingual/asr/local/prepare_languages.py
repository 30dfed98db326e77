"""Stage 0 of the multilingual recipe: read sentences in English, German, French and Spanish spoken by
espeak-ng voices, with exact transcripts, plus the bundled real English recordings.

Per language the last ``--test-sentences`` sentences are test sentences and the ``--val-sentences`` before
them validation sentences, neither ever trained on, so the validation loss (which picks the checkpoint)
rewards an adapter that hears new sentences, not one that has learnt the training sentences by heart. Each
training sentence is read by ``--readings`` training voices in turn. Voice variants m7 and f4 speak the test
sets only, so a test voice is never a training voice at another rate or pitch; validation voices are
neither.
Writes EXP/data/{LANG}_{train,val,test}.jsonl, train.jsonl and val.jsonl (every language) and test.jsonl
(every language's test set and the real English sentences); ``language`` is each item's language and
``task`` its test set (en_tts, de_tts, ..., en_real).

    python recipes/multilingual/asr/local/prepare_languages.py EXP [--train-voices 24] [--readings 2]
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
# Many more variants than the test's two, so that an adapter learns what espeak-ng's languages sound like
# across voices rather than the few it was trained on.
TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m8", "f1", "f2", "f3", "f5", "klatt", "klatt3", "Andy",
                  "Annie", "Denis", "Gene", "Jacky", "Michael", "Mr_Serious", "Alicia", "Linda", "grandma",
                  "grandpa", "travis", "shelby")


def entry(path: Path, uid: str, text: str, language: str, speaker: str, task: str) -> Entry:
    frames, rate, _ = probe(path)
    return Entry(uid, str(path.resolve()), round(frames / rate, 4), rate, text=text, speaker=speaker, task=task,
                 language=language)


def readings(voices: list, sentences: range, times: int) -> list[tuple]:
    """Each sentence read ``times`` times (at most as many as there are voices), by voices taken in turn, so
    that no voice reads a sentence twice and every voice reads about as many sentences."""
    return [(voices[(index + turn) % len(voices)], index) for turn in range(times) for index in sentences]


def plan_splits(lines: list[str], voices: list, args: argparse.Namespace, seed: str) -> dict[str, list[tuple]]:
    """(voice, sentence index) pairs of each split: training voices read the training sentences, other
    voices the validation sentences, the held-out variants the test sentences."""
    test_at = len(lines) - args.test_sentences
    val_at = test_at - args.val_sentences
    if val_at < 1:
        raise SystemExit(f"{len(lines)} sentences leave none to train on")
    rng = random.Random(seed)
    held = [v for v in voices if v.name.endswith(TEST_VARIANTS)]
    rest = [v for v in voices if not v.name.endswith(TEST_VARIANTS)]
    if len(rest) < args.train_voices + args.val_voices or len(held) < args.test_voices \
            or args.train_voices < args.readings:
        raise SystemExit(f"{len(rest)} training/validation voices and {len(held)} test voices: too few for "
                         f"{args.train_voices} training voices (each sentence read {args.readings} times), "
                         f"{args.val_voices} validation and {args.test_voices} test voices")
    rng.shuffle(held), rng.shuffle(rest)
    return {"train": readings(rest[:args.train_voices], range(val_at), args.readings),
            "val": [(voice, index) for voice in rest[args.train_voices:args.train_voices + args.val_voices]
                    for index in range(val_at, test_at)],
            "test": [(voice, index) for voice in held[:args.test_voices] for index in range(test_at, len(lines))]}


def language_splits(out: Path, language: str, args: argparse.Namespace) -> dict[str, list[Entry]]:
    lines = [s.strip() for s in (ROOT / "data" / "sentences" / SENTENCES[language]).read_text().splitlines() if s.strip()]
    variants = TRAIN_VARIANTS + tuple(v.lstrip("+") for v in TEST_VARIANTS)
    voices = [v for v in available_voices(language=language, variants=variants) if v.engine == "espeak-ng"]
    plan = plan_splits(lines, voices, args, f"{args.seed}-{language}")
    splits = {}
    for split, pairs in plan.items():
        items = []
        for voice, index in pairs:
            uid = f"{language}_{voice.id}_{split}{index:03d}"
            path = synthesise(voice, lines[index], out / "audio" / language / f"{uid}.wav")
            items.append(entry(path, uid, lines[index], language, voice.id, f"{language}_tts"))
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
    parser.add_argument("--train-voices", type=int, default=24)
    parser.add_argument("--val-voices", type=int, default=3)
    parser.add_argument("--test-voices", type=int, default=2)
    parser.add_argument("--readings", type=int, default=2, help="training voices that read each sentence")
    parser.add_argument("--val-sentences", type=int, default=8)
    parser.add_argument("--test-sentences", type=int, default=8)
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
