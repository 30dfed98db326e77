"""Degradations for restoration training and robustness tests: seeded, composable, length-preserving.

Each function takes a mono float waveform (samples,) and returns one of the same length. ``Degrader``
draws a random chain of up to ``max_effects`` of them per call from a seed, so the same (seed, index)
always yields the same audio, on the fly in a dataset or offline to disk.
"""
from __future__ import annotations

import functools
import logging
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from .audio import load_audio

log = logging.getLogger(__name__)


def _power(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean().clamp(min=1e-12)


def add_noise(clean: torch.Tensor, noise: torch.Tensor, snr_db: float, rng: random.Random | None = None) -> torch.Tensor:
    """Mix ``noise`` (looped or cut from a random offset) at ``snr_db`` relative to ``clean``'s power."""
    rng = rng or random.Random(0)
    n = clean.shape[-1]
    if noise.shape[-1] < n:
        noise = noise.repeat(n // noise.shape[-1] + 1)
    start = rng.randrange(0, noise.shape[-1] - n + 1)
    noise = noise[start:start + n]
    scale = torch.sqrt(_power(clean) / (_power(noise) * 10 ** (snr_db / 10)))
    return clean + scale * noise


def babble(talkers: list[torch.Tensor], length: int, rng: random.Random | None = None) -> torch.Tensor:
    """Several people talking at once: a random stretch of each recording, each at the same power, summed."""
    rng = rng or random.Random(0)
    mixed = torch.zeros(length)
    for talker in talkers:
        if talker.shape[-1] < length:
            talker = talker.repeat(length // talker.shape[-1] + 1)
        start = rng.randrange(0, talker.shape[-1] - length + 1)
        piece = talker[start:start + length]
        mixed += piece / _power(piece).sqrt()
    return mixed


def colored_noise(length: int, color: str = "white", rng: random.Random | None = None) -> torch.Tensor:
    """Noise with power spectrum ~ f^beta: white 0, pink -1, brown -2, blue +1, violet +2."""
    beta = {"white": 0.0, "pink": -1.0, "brown": -2.0, "blue": 1.0, "violet": 2.0}[color]
    gen = np.random.default_rng((rng or random.Random(0)).getrandbits(32))
    spectrum = np.fft.rfft(gen.standard_normal(length))
    freqs = np.fft.rfftfreq(length)
    freqs[0] = freqs[1] if length > 1 else 1.0
    shaped = np.fft.irfft(spectrum * freqs ** (beta / 2), n=length)
    return torch.from_numpy(shaped / (shaped.std() + 1e-12)).float()


def _log_frequency_envelope(freqs: np.ndarray, depth_db: float, gen: np.random.Generator,
                            points: int = 8) -> np.ndarray:
    """An amplitude curve over ``freqs``: random levels in [-depth_db, 0] dB at points spread evenly on a log
    frequency axis, joined by straight lines there (a smooth equaliser no recording was made through)."""
    top = max(float(freqs[-1]), 100.0)
    anchors = np.geomspace(40.0, top, points)
    levels = gen.uniform(-depth_db, 0.0, points)
    db = np.interp(np.log(np.clip(freqs, 40.0, top)), np.log(anchors), levels)
    return 10 ** (db / 20)


def equalise(wave: torch.Tensor, sample_rate: int, depth_db: float, rng: random.Random | None = None) -> torch.Tensor:
    """``wave`` through a random smooth equaliser up to ``depth_db`` deep: one recorded noise becomes many."""
    gen = np.random.default_rng((rng or random.Random(0)).getrandbits(32))
    x = wave.numpy().astype(np.float64)
    freqs = np.fft.rfftfreq(x.shape[-1], 1 / sample_rate)
    shaped = np.fft.irfft(np.fft.rfft(x) * _log_frequency_envelope(freqs, depth_db, gen), n=x.shape[-1])
    return torch.from_numpy(shaped).float()


def texture_noise(length: int, sample_rate: int = 16000, rng: random.Random | None = None) -> torch.Tensor:
    """A noise unlike any recording on hand: Gaussian noise under a random spectral envelope (up to 40 dB
    deep), its level swinging slowly (up to 12 dB at 0.2-6 Hz) or switching on and off, and sometimes a hum
    (harmonics of 50-300 Hz), the kinds of noise (fans, engines, traffic, rain, machines) a few recordings
    cannot cover. Unit variance."""
    rng = rng or random.Random(0)
    gen = np.random.default_rng(rng.getrandbits(32))
    freqs = np.fft.rfftfreq(length, 1 / sample_rate)
    noise = np.fft.irfft(np.fft.rfft(gen.standard_normal(length)) * _log_frequency_envelope(freqs, 40.0, gen), n=length)
    noise /= noise.std() + 1e-12
    t = np.arange(length) / sample_rate
    if rng.random() < 0.4:
        f0 = rng.uniform(50.0, 300.0)
        harmonics = [k for k in range(1, rng.randint(3, 12) + 1) if k * f0 < sample_rate / 2]
        hum = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k ** rng.uniform(0.5, 1.5)
                  for k in harmonics)
        noise = noise + hum / (hum.std() + 1e-12) * 10 ** (rng.uniform(-10.0, 6.0) / 20)
    if rng.random() < 0.25:  # intermittent: on and off in stretches of 0.2-2 s
        gate, start, on = np.empty(length), 0, rng.random() < 0.5
        while start < length:
            stop = start + int(rng.uniform(0.2, 2.0) * sample_rate)
            gate[start:stop], start, on = (1.0 if on else 10 ** (-rng.uniform(10, 30) / 20)), stop, not on
        noise = noise * np.convolve(gate, np.hanning(801) / np.hanning(801).sum(), mode="same")
    else:
        swing = sum(np.sin(2 * np.pi * rng.uniform(0.2, 6.0) * t + rng.uniform(0, 2 * np.pi)) for _ in range(3)) / 3
        noise = noise * 10 ** (rng.uniform(0.0, 12.0) * swing / 20)
    return torch.from_numpy(noise / (noise.std() + 1e-12)).float()


def reverberate(wave: torch.Tensor, rir: torch.Tensor) -> torch.Tensor:
    """Convolve with a room impulse response aligned at its direct path, so speech does not shift in time."""
    rir = rir / rir.abs().max().clamp(min=1e-12)
    direct = int(rir.abs().argmax())
    wet = AF.fftconvolve(wave, rir)[direct:direct + wave.shape[-1]]
    return wet * torch.sqrt(_power(wave) / _power(wet))


def simulate_rir(rt60: float, sample_rate: int = 16000, rng: random.Random | None = None) -> torch.Tensor:
    """A shoebox-room impulse response with reverberation time ``rt60`` (image source method)."""
    import pyroomacoustics as pra

    rng = rng or random.Random(0)
    room_dim = [rng.uniform(4, 10), rng.uniform(3, 8), rng.uniform(2.5, 4)]
    absorption, max_order = pra.inverse_sabine(rt60, room_dim)
    room = pra.ShoeBox(room_dim, fs=sample_rate, materials=pra.Material(absorption), max_order=min(max_order, 60))
    pick = lambda: [rng.uniform(0.5, d - 0.5) for d in room_dim]
    room.add_source(pick())
    room.add_microphone(pick())
    room.compute_rir()
    return torch.tensor(room.rir[0][0], dtype=torch.float32)


def band_limit(wave: torch.Tensor, sample_rate: int, bandwidth_hz: int) -> torch.Tensor:
    """Simulate a lower sampling rate: down to 2 x bandwidth and back up."""
    low = 2 * bandwidth_hz
    if low >= sample_rate:
        return wave
    out = AF.resample(AF.resample(wave, sample_rate, low), low, sample_rate)
    return _fit(out, wave.shape[-1])


def low_pass(wave: torch.Tensor, sample_rate: int, cutoff_hz: float, order: int = 4) -> torch.Tensor:
    out = wave
    for _ in range(order // 2):
        out = AF.lowpass_biquad(out, sample_rate, cutoff_hz)
    return out


def clip(wave: torch.Tensor, threshold: float, soft: bool = False) -> torch.Tensor:
    """Hard clipping at +-threshold, or a tanh soft clipper that saturates there."""
    if soft:
        return threshold * torch.tanh(wave / threshold)
    return wave.clamp(-threshold, threshold)


def gain(wave: torch.Tensor, db: float) -> torch.Tensor:
    return wave * 10 ** (db / 20)


def has_ffmpeg() -> bool:
    return shutil.which("ffmpeg") is not None


@functools.cache
def _warn_without_codec() -> None:  # once a process: every dataset and worker builds a Degrader
    log.warning("ffmpeg is not on PATH: degrading without the codec effect (apt-get install ffmpeg)")


def codec(wave: torch.Tensor, sample_rate: int, name: str = "mp3", bitrate: str = "16k") -> torch.Tensor:
    """Encode and decode through ffmpeg (mp3 or opus); the codec's delay is aligned back out."""
    if not has_ffmpeg():
        raise RuntimeError("codec degradation needs ffmpeg on PATH")
    encoder = {"mp3": ("libmp3lame", "mp3"), "opus": ("libopus", "ogg")}[name]
    with tempfile.TemporaryDirectory() as tmp:
        src, enc, dec = Path(tmp) / "in.wav", Path(tmp) / f"c.{encoder[1]}", Path(tmp) / "out.wav"
        sf.write(src, wave.numpy(), sample_rate, subtype="FLOAT")
        run = lambda *args: subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args],
                                           check=True, capture_output=True)
        run("-i", str(src), "-c:a", encoder[0], "-b:a", bitrate, str(enc))
        run("-i", str(enc), "-ar", str(sample_rate), "-ac", "1", str(dec))
        decoded = load_audio(dec, sample_rate)
    return _fit(decoded[_delay(wave, decoded):], wave.shape[-1])


def _delay(reference: torch.Tensor, delayed: torch.Tensor, max_lag: int = 4000) -> int:
    n = min(reference.shape[-1], delayed.shape[-1])
    corr = AF.fftconvolve(delayed[:n], reference[:n].flip(-1))
    lags = torch.arange(-n + 1, n)
    window = (lags >= 0) & (lags <= max_lag)
    return int(lags[window][corr[window].argmax()])


def _fit(wave: torch.Tensor, length: int) -> torch.Tensor:
    if wave.shape[-1] >= length:
        return wave[:length]
    return torch.nn.functional.pad(wave, (0, length - wave.shape[-1]))


@dataclass
class DegradeConfig:
    snr_db: tuple[float, float] = (5.0, 30.0)
    rt60: tuple[float, float] = (0.2, 0.5)
    noise_files: list[str] = field(default_factory=list)
    rir_files: list[str] = field(default_factory=list)
    babble_files: list[str] = field(default_factory=list)  # other people's speech: the babble effect's talkers
    babble_talkers: tuple[int, int] = (3, 6)
    colors: tuple[str, ...] = ("white", "pink", "brown")
    bandwidths_hz: tuple[int, ...] = (2000, 3000, 4000)
    clip_range: tuple[float, float] = (0.05, 0.3)
    codecs: tuple[str, ...] = ("mp3", "opus")
    max_effects: int = 3
    min_effects: int = 1
    p_clean: float = 0.05
    p_real: float = 0.5             # chance of a real noise / RIR file over coloured noise / a simulated room
    p_texture: float = 0.0          # chance that a noise not drawn from the files is a texture_noise, not coloured
    noise_eq_db: float = 0.0        # depth of a random equaliser on each real noise drawn (0: played as recorded)
    effects: tuple[str, ...] = ("noise", "reverb", "band_limit", "clip", "codec", "babble")


class Degrader:
    """``degrader(wave, index)``: a seeded random chain of degradations (the order: reverb, band, clip, codec,
    babble, noise). Babble needs ``babble_files`` and the codec ffmpeg; without them those effects are not
    drawn."""

    ORDER = ("reverb", "band_limit", "clip", "codec", "babble", "noise")

    def __init__(self, config: DegradeConfig, sample_rate: int = 16000, seed: int = 0):
        self.config, self.sample_rate, self.seed = config, sample_rate, seed
        self.noises = [load_audio(p, sample_rate) for p in config.noise_files]
        self.rirs = [load_audio(p, sample_rate) for p in config.rir_files]
        self.talkers = [load_audio(p, sample_rate) for p in config.babble_files]
        self.effects = [e for e in config.effects if (e != "codec" or has_ffmpeg()) and (e != "babble" or self.talkers)]
        if "codec" in config.effects and not has_ffmpeg():  # the chains drawn differ from a machine with ffmpeg
            _warn_without_codec()

    def chosen(self, index: int) -> tuple[random.Random, list[str]]:
        rng = random.Random(self.seed * 1_000_003 + index)
        if rng.random() < self.config.p_clean:
            return rng, []
        most = min(self.config.max_effects, len(self.effects))
        count = rng.randint(min(self.config.min_effects, most), most)
        picked = set(rng.sample(self.effects, count))
        return rng, [e for e in self.ORDER if e in picked]

    def __call__(self, wave: torch.Tensor, index: int) -> torch.Tensor:
        rng, effects = self.chosen(index)
        c, sr = self.config, self.sample_rate
        for effect in effects:
            if effect == "reverb":
                use_real = self.rirs and rng.random() < c.p_real
                rir = rng.choice(self.rirs) if use_real else simulate_rir(rng.uniform(*c.rt60), sr, rng)
                wave = reverberate(wave, rir)
            elif effect == "band_limit":
                wave = band_limit(wave, sr, rng.choice(c.bandwidths_hz))
            elif effect == "clip":
                peak = wave.abs().max().clamp(min=1e-6)
                wave = clip(wave, float(peak) * rng.uniform(*c.clip_range), soft=rng.random() < 0.5)
            elif effect == "codec":
                wave = codec(wave, sr, rng.choice(c.codecs), rng.choice(["8k", "12k", "16k"]))
            elif effect == "babble":
                count = min(rng.randint(*c.babble_talkers), len(self.talkers))
                crowd = babble(rng.sample(self.talkers, count), wave.shape[-1], rng)
                wave = add_noise(wave, crowd, rng.uniform(*c.snr_db), rng)
            elif effect == "noise":
                wave = add_noise(wave, self._noise(wave.shape[-1], rng), rng.uniform(*c.snr_db), rng)
        peak = wave.abs().max()
        return wave / peak * 0.99 if peak > 0.99 else wave

    def _noise(self, length: int, rng: random.Random) -> torch.Tensor:
        c = self.config  # the draws of p_texture and noise_eq_db happen only when they are on: old seeds keep their audio
        if self.noises and rng.random() < c.p_real:
            noise = rng.choice(self.noises)
            return equalise(noise, self.sample_rate, c.noise_eq_db, rng) if c.noise_eq_db > 0 else noise
        if c.p_texture > 0 and rng.random() < c.p_texture:
            return texture_noise(length, self.sample_rate, rng)
        return colored_noise(length, rng.choice(c.colors), rng)


@dataclass
class AugmentConfig:
    """Training-time augmentation: speed perturbation, gain, additive noise (with probability ``p_noise``).
    Speed alone (``gain_db=[0, 0]``, ``p_noise=0``) gives each clip ``len(speeds)`` versions only, so a
    cache of encoder states keyed by the samples (``encoders/cache.py``) serves every epoch after the first.
    ``max_seconds``: a speed that would slow a clip past it is not drawn for that clip (Whisper hears 30 s)."""

    p: float = 0.8
    speeds: tuple[float, ...] = (0.9, 1.0, 1.1)
    gain_db: tuple[float, float] = (-6.0, 6.0)
    snr_db: tuple[float, float] = (10.0, 40.0)
    noise_files: list[str] = field(default_factory=list)
    p_noise: float = 1.0
    max_seconds: float | None = None


class Augmenter:
    """``augmenter(wave, draw)``: the augmentation of a draw depends on the seed and the draw alone (not on
    what came before, nor on the worker process), so a seeded run, resumed or not, repeats exactly."""

    def __init__(self, config: AugmentConfig, sample_rate: int = 16000, seed: int = 0):
        self.config, self.sample_rate, self.seed = config, sample_rate, seed
        self.noises = [load_audio(p, sample_rate) for p in config.noise_files]

    def __call__(self, wave: torch.Tensor, draw: int) -> torch.Tensor:
        c, rng = self.config, random.Random(self.seed * 1_000_003 + draw)
        if rng.random() >= c.p:
            return wave
        speeds = c.speeds if c.max_seconds is None else \
            [s for s in c.speeds if wave.shape[-1] / s <= c.max_seconds * self.sample_rate] or [max(c.speeds)]
        speed = rng.choice(speeds)
        if speed != 1.0:  # resampling by 1/speed and playing at the old rate changes tempo and pitch
            wave = AF.resample(wave, int(self.sample_rate * speed), self.sample_rate)
        wave = gain(wave, rng.uniform(*c.gain_db))
        if c.p_noise < 1.0 and rng.random() >= c.p_noise:  # drawn only then: seeded runs without it repeat
            return wave
        noise = rng.choice(self.noises) if self.noises and rng.random() < 0.5 else \
            colored_noise(wave.shape[-1], rng.choice(("white", "pink", "brown")), rng)
        return add_noise(wave, noise, rng.uniform(*c.snr_db), rng)
