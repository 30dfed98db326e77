"""The restoration recipe's RESULTS.md: the training stages, what ``evaluation/restoration.py`` measured
(``measure.json``), the audio-quality summary, and the distilled student's section."""
from __future__ import annotations

import json
from pathlib import Path

from ..fileio import write_text
from .training import training_table

TRAINING_STAGES = [("cleaner", "1 cleaner (parallel adapters)"),
                   ("bridge_clean", "2 bridge to HiFi-GAN's log-mel, clean features"),
                   ("bridge_cleaned", "3 bridge fine-tuned on cleaned features")]


def write_restoration_report(exp: str | Path, out: str | Path, command: str) -> Path:
    exp = Path(exp)
    measured = json.loads((exp / "measure.json").read_text())
    quality = (exp / "quality" / "summary.md").read_text().strip()
    hard = exp / "quality_hard" / "summary.md"
    hard_section = f"""
## Harder held-out condition

Low SNR (0-5 dB), the held-out rooms and a telephone-like band limit, all at once.

{hard.read_text().strip()}
""" if hard.exists() else ""
    student_section = _student_section(exp)
    missing = [stage for stage, _ in TRAINING_STAGES if not (exp / stage / "fit_result.json").exists()]
    if missing:
        raise FileNotFoundError(f"{exp}: no fit_result.json for {missing} (run the recipe's training stages)")
    text = f"""# Speech restoration on real recordings: frozen Whisper tiny.en + parallel adapters + a bridge to the pretrained HiFi-GAN

Held-out evaluation: the {measured['files']} read sentences of `speech_samples/asr` (two speakers, never
heard in training), degraded with real room impulse responses and real noise recordings that training
never used. Training: the clean recordings and many synthetic voices (espeak-ng accents and variants at
several rates and pitches, flite), degraded on the fly (other real noises and RIRs, simulated rooms,
coloured noise, band limits, clipping, codecs); the cleaner also on spoken-digit sequences of six more
voices (FSDD, 8 kHz). The bridge maps the encoder's features to the log-mel of the frozen pretrained
HiFi-GAN V1 (universal generator), which is never trained.

## Cleaner: feature distance to the clean audio's features (held-out, mean L1)

| degraded | cleaned | reduction |
|---|---|---|
| {measured['l1_degraded']:.4f} | {measured['l1_cleaned']:.4f} | {100 * measured['l1_reduction']:.1f}% |

## Audio quality (held-out)

"degraded" is the input and "restored" the restorer's output; "clean" is the original recording and
"clean_restored" the restorer's output for it; "ceiling" is the copy-synthesis from the clean audio's own
features (cleaner off) through the bridge and HiFi-GAN: the best the restorer can do.

{quality}
{hard_section}{student_section}
## Speed

Cleaner + bridge + vocoder ({measured.get('backend', 'wavefit')}) real-time factor {measured['rtf']:.3f} (batch 1, CPU,
{measured['threads']} threads, {measured['audio_s']:.1f} s of audio); `benches/restore_speed.py` gives the parts.

## Training

{training_table(exp, TRAINING_STAGES, "stage")}

Regenerate: `{command}` (its last stage alone rebuilds this file from `{exp}`).
"""
    return write_text(out, text)


def _student_section(exp: Path) -> str:
    """Stage 8's table: the same restorer speaking through the distilled student instead of HiFi-GAN V1."""
    quality, info = exp / "quality_student" / "summary.md", exp / "student" / "distillation.json"
    if not (quality.exists() and info.exists()):
        return ""
    run = json.loads(info.read_text())
    rtf = exp / "student_rtf.txt"  # written by the GPU run that distilled it
    gpu = f"\n\nVocoder parts on the GPU that distilled it (RTF, 4 s items):\n\n{rtf.read_text().strip()}\n" \
        if rtf.exists() else ""
    return f"""
## Through the distilled student vocoder (stage 8)

The same cleaner and bridge, with a student of HiFi-GAN V1 (ConvNeXt over mel frames + inverse STFT,
7.7 M parameters) speaking instead: distilled for {run['steps']} steps of {run['batch']} crops
({run['seconds']:.0f} s on {run['device']}) from {run['corpus_seconds'] / 60:.0f} minutes of log-mels, with no
discriminator. Held-out distillation loss: spectral convergence {run['validation']['sc']:.3f}, log magnitude
{run['validation']['log_mag']:.3f}. "ceiling" is copy-synthesis through bridge and student;
"restored_hard" the harder condition.

{quality.read_text().strip()}{gpu}
"""
