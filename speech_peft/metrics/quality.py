"""Speech quality: intrusive (PESQ wide band, STOI, SI-SDR against a clean reference) and
non-intrusive (DNSMOS), plus speaker similarity. The DNSMOS and speaker models ship inside their
wheels (speechmos, resemblyzer); nothing is downloaded."""
from __future__ import annotations

import functools

import numpy as np
from ..errors import UserError

SR = 16000


def _pair(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(reference), len(estimate))
    if n == 0:
        raise UserError("empty signal")
    return reference[:n].astype(np.float64), estimate[:n].astype(np.float64)


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al., 2019)."""
    ref, est = _pair(reference, estimate)
    ref, est = ref - ref.mean(), est - est.mean()
    target = (est @ ref) / max(ref @ ref, 1e-12) * ref
    noise = est - target
    return float(10 * np.log10(max(target @ target, 1e-12) / max(noise @ noise, 1e-12)))


def pesq_wb(reference: np.ndarray, estimate: np.ndarray) -> float:
    from pesq import pesq

    ref, est = _pair(reference, estimate)
    return float(pesq(SR, ref, est, "wb"))


def stoi(reference: np.ndarray, estimate: np.ndarray) -> float:
    from pystoi import stoi as _stoi

    ref, est = _pair(reference, estimate)
    return float(_stoi(ref, est, SR, extended=False))


def dnsmos(wave: np.ndarray) -> dict[str, float]:
    """DNSMOS P.835 (SIG, BAK, OVRL) and P.808 MOS of 16 kHz audio."""
    from speechmos import dnsmos as _dnsmos

    peak = np.abs(wave).max()
    scaled = wave / peak * 0.99 if peak > 1.0 else wave  # the model wants [-1, 1]
    out = _dnsmos.run(scaled.astype(np.float32), SR)
    return {"dnsmos_ovrl": float(out["ovrl_mos"]), "dnsmos_sig": float(out["sig_mos"]),
            "dnsmos_bak": float(out["bak_mos"]), "dnsmos_p808": float(out["p808_mos"])}


@functools.lru_cache(maxsize=1)
def _voice_encoder():
    from resemblyzer import VoiceEncoder

    return VoiceEncoder("cpu", verbose=False)


def speaker_embedding(wave: np.ndarray) -> np.ndarray:
    from resemblyzer import preprocess_wav

    return _voice_encoder().embed_utterance(preprocess_wav(wave.astype(np.float32), SR))


def speaker_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of the two utterances' speaker embeddings (1 = same voice)."""
    ea, eb = speaker_embedding(a), speaker_embedding(b)
    return float(ea @ eb / (np.linalg.norm(ea) * np.linalg.norm(eb) + 1e-12))
