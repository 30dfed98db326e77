"""Four ASR tasks on real and synthetic speech, ten test sets, and a task-balanced training mixture.

    python recipes/multitask/asr/local/prepare_tasks.py EXP [--fsdd DIR] [--voices SENTENCES] [--real DIR]

Writes EXP/tasks/{task}_{train,val}.jsonl, EXP/tasks/test_{set}.jsonl (every entry tagged with its
``task``) and EXP/tasks/mixture_{train,val}.jsonl (equal numbers of utterances per task).

  read    synthetic voices reading sentences (espeak-ng, flite); test: the real read sentences, and
          synthetic voices never trained on
  far     the same speech through rooms (real and simulated) and noise at low SNR; test: real rooms
          and noises never trained on, on real and unseen synthetic speech, and a 0-5 dB condition
  phone   band limits and codecs; test: the same on real and unseen synthetic speech
  digits  spoken digit sequences (FSDD, 8 kHz), test speakers never heard; test: clean, noisy, phone

With ``--real`` (speechocean762: 200 real speakers, children and adults, non-native English; by default
../shared/data/speechocean762, skipped when absent) every task also trains on real speakers: their read
sentences as they are (read), through the training rooms and noises (far) and the telephone band (phone),
their digit strings (digits). Speakers are split by ``digits_long.speaker_split`` (a quarter test, an eighth
validation), and the test speakers give four more test sets: ``*_accented``.
"""
from __future__ import annotations

import argparse
import random
import subprocess
from pathlib import Path

from speech_peft.data.builders import from_folder, from_speaker_table
from speech_peft.data.degrade import DegradeConfig
from speech_peft.data.digits_long import digit_words, speaker_split
from speech_peft.data.manifest import read_manifest, write_manifest
from speech_peft.jobs.degrade import degrade_to_disk
from speech_peft.metrics.wer import read_references

ROOT = Path(__file__).resolve().parents[4]
SAMPLES = ROOT / "data" / "speech_samples"
TRAIN_NOISE = [str(SAMPLES / "noise" / f"noise{i}.wav") for i in (1, 2, 3)]
TEST_NOISE = [str(SAMPLES / "noise" / f"noise{i}.wav") for i in (4, 5)]
TRAIN_RIRS = [str(SAMPLES / "rirs" / f"rir{i}.wav") for i in (1, 2)]
TEST_RIRS = [str(SAMPLES / "rirs" / f"rir{i}.wav") for i in (3, 4)]
FAR = dict(effects=("reverb", "noise"), min_effects=2, max_effects=2, p_clean=0.0)
PHONE = dict(effects=("band_limit", "codec"), min_effects=2, max_effects=2, p_clean=0.0, bandwidths_hz=(3400,),
             codecs=("mp3", "opus"))


def tagged(entries, task: str):
    """Each entry marked with its task, its id prefixed by it (the same sentence occurs in several tasks)."""
    for entry in entries:
        entry.task = task
        entry.id = f"{task}_{entry.id}"
    return entries


def degraded(manifest: Path, out: Path, seed: int, **config) -> list:
    return read_manifest(degrade_to_disk([str(manifest)], str(out), DegradeConfig(**config), seed=seed))


def speaker_manifests(folder: Path, out: Path, test_items: int) -> dict[str, Path]:
    """speechocean762 by split (train, val, test) and kind (sentences; digits, as digit words): one manifest
    each, test sets at most ``test_items`` utterances drawn evenly over the test speakers; {} without the folder."""
    if not (folder / "manifest.tsv").is_file():
        print(f"{folder}: not found; the tasks train on synthetic voices and FSDD only")
        return {}
    parts: dict[str, list] = {}
    entries = from_speaker_table(folder, skip_bad=True, rejects_path=str(out / "rejects.tsv"))
    untranscribed = [e.id for e in entries if not e.text]
    if untranscribed:
        print(f"{folder}: {len(untranscribed)} utterances without a transcript skipped (e.g. {untranscribed[0]})")
    for entry in (e for e in entries if e.text):
        split = speaker_split(entry.speaker)
        split = "test" if split == "test_real" else split
        digits = digit_words(entry.text)
        entry.text = digits or entry.text.lower()
        parts.setdefault(f"{split}_{'digits' if digits else 'sentences'}", []).append(entry)
    rng = random.Random(0)
    paths = {}
    for name, entries in sorted(parts.items()):
        if name.startswith("test") and len(entries) > test_items:
            entries = round_robin(entries, test_items, rng)
        paths[name] = write_manifest(entries, out / f"{name}.jsonl", relative=False)
    return paths


def round_robin(entries: list, count: int, rng: random.Random) -> list:
    """``count`` entries taken one speaker at a time, so that every speaker is heard before any twice."""
    by_speaker: dict[str, list] = {}
    for entry in entries:
        by_speaker.setdefault(entry.speaker, []).append(entry)
    for group in by_speaker.values():
        rng.shuffle(group)
    taken, depth = [], 0
    while len(taken) < count:
        taken += [group[depth] for group in by_speaker.values() if depth < len(group)][: count - len(taken)]
        depth += 1
    return taken


def joined(manifests: list[Path], out: Path) -> Path:
    return write_manifest([e for m in manifests for e in read_manifest(m)], out, relative=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("exp", type=Path)
    parser.add_argument("--fsdd", default=str(ROOT.parent / "shared" / "data" / "fsdd"))
    parser.add_argument("--voices", type=int, default=3, help="sentences per synthetic voice")
    parser.add_argument("--real", default=str(ROOT.parent / "shared" / "data" / "speechocean762"),
                        help="speechocean762 (real speakers with transcripts); skipped when absent")
    parser.add_argument("--real-test-items", type=int, default=60, help="utterances per real-speaker test set")
    args = parser.parse_args()
    exp, tasks = args.exp, args.exp / "tasks"
    fsdd = args.fsdd if Path(args.fsdd).is_dir() else str(ROOT / "data" / "fsdd_subset")
    cli = ["speech-peft", "prepare"]
    if not (exp / "tts" / "train.jsonl").exists():
        subprocess.run([*cli, "tts_voices", str(ROOT / "data/sentences/read_sentences.txt"), str(exp / "tts"),
                        "--voices", str(args.voices), "0"], check=True, stdout=subprocess.DEVNULL)
    if not (exp / "fsdd_long" / "train.jsonl").exists():
        subprocess.run([*cli, "fsdd_long", fsdd, str(exp / "fsdd_long"), "--long-items", "6", "3"], check=True,
                       stdout=subprocess.DEVNULL)
    refs = read_references(str(SAMPLES / "asr" / "transcripts.tsv"))
    real = from_folder(SAMPLES / "asr")
    for entry in real:
        entry.text = refs[entry.id]
    write_manifest(real, exp / "real" / "read.jsonl", relative=False)
    real_m, tts_train, tts_val = exp / "real" / "read.jsonl", exp / "tts" / "train.jsonl", exp / "tts" / "val.jsonl"
    digits_test = exp / "fsdd_long" / "test_short.jsonl"
    write_manifest([e for e in read_manifest(exp / "fsdd_long" / "test.jsonl") if e.task in ("5s", "10s")],
                   digits_test, relative=False)

    real_speakers = speaker_manifests(Path(args.real), exp / "real_speakers", args.real_test_items)
    speech_train, speech_val = tts_train, tts_val  # the synthetic voices, and the real speakers beside them
    if real_speakers:
        speech_train = joined([tts_train, real_speakers["train_sentences"]], exp / "real_speakers" / "speech_train.jsonl")
        speech_val = joined([tts_val, real_speakers["val_sentences"]], exp / "real_speakers" / "speech_val.jsonl")
    splits = {
        "read": (read_manifest(speech_train), read_manifest(speech_val)),
        "far": (degraded(speech_train, exp / "far" / "train", 1, noise_files=TRAIN_NOISE, rir_files=TRAIN_RIRS,
                         snr_db=(0, 15), **FAR),
                degraded(speech_val, exp / "far" / "val", 2, noise_files=TRAIN_NOISE, rir_files=TRAIN_RIRS,
                         snr_db=(0, 15), **FAR)),
        "phone": (degraded(speech_train, exp / "phone" / "train", 3, **PHONE),
                  degraded(speech_val, exp / "phone" / "val", 4, **PHONE)),
        "digits": (read_manifest(exp / "fsdd_long" / "train.jsonl"), read_manifest(exp / "fsdd_long" / "val.jsonl")),
    }
    if real_speakers:
        splits["digits"] = tuple(part + read_manifest(real_speakers[f"{split}_digits"])
                                 for part, split in zip(splits["digits"], ("train", "val")))
    held_out = dict(noise_files=TEST_NOISE, rir_files=TEST_RIRS, p_real=1.0)
    tests = {
        "read_real": ("read", read_manifest(real_m)),
        "read_tts": ("read", read_manifest(tts_val)),
        "far_real": ("far", degraded(real_m, exp / "far" / "test_real", 11, snr_db=(5, 15), **held_out, **FAR)),
        "far_tts": ("far", degraded(tts_val, exp / "far" / "test_tts", 12, snr_db=(5, 15), **held_out, **FAR)),
        "far_hard": ("far", degraded(real_m, exp / "far" / "test_hard", 13, snr_db=(0, 5), **held_out, **FAR)),
        "phone_real": ("phone", degraded(real_m, exp / "phone" / "test_real", 14, **PHONE)),
        "phone_tts": ("phone", degraded(tts_val, exp / "phone" / "test_tts", 15, **PHONE)),
        "digits": ("digits", read_manifest(digits_test)),
        "digits_noisy": ("digits", degraded(digits_test, exp / "digits" / "test_noisy", 16, effects=("noise",),
                                            min_effects=1, max_effects=1, p_clean=0.0, snr_db=(5, 15),
                                            noise_files=TEST_NOISE, p_real=1.0)),
        "digits_phone": ("digits", degraded(digits_test, exp / "digits" / "test_phone", 17, **PHONE)),
    }
    if real_speakers:  # speakers, rooms and noises no trained part heard
        accented = real_speakers["test_sentences"]
        tests.update({
            "read_accented": ("read", read_manifest(accented)),
            "far_accented": ("far", degraded(accented, exp / "far" / "test_accented", 21, snr_db=(5, 15),
                                             **held_out, **FAR)),
            "phone_accented": ("phone", degraded(accented, exp / "phone" / "test_accented", 22, **PHONE)),
            "digits_accented": ("digits", read_manifest(real_speakers["test_digits"]))})
    for task, (train, val) in splits.items():
        write_manifest(tagged(train, task), tasks / f"{task}_train.jsonl", relative=False)
        write_manifest(tagged(val, task), tasks / f"{task}_val.jsonl", relative=False)
    for name, (task, entries) in tests.items():
        write_manifest(tagged(entries, task), tasks / f"test_{name}.jsonl", relative=False)
    rng = random.Random(0)
    for split, index in (("train", 0), ("val", 1)):
        per_task = min(len(parts[index]) for parts in splits.values())
        mixture = [e for parts in splits.values() for e in rng.sample(parts[index], per_task)]
        rng.shuffle(mixture)
        write_manifest(mixture, tasks / f"mixture_{split}.jsonl", relative=False)
    print(f"{tasks}: " + ", ".join(f"{t} {len(s[0])}/{len(s[1])}" for t, s in splits.items())
          + "; tests " + ", ".join(f"{n} {len(e)}" for n, (_, e) in tests.items()))


if __name__ == "__main__":
    main()
