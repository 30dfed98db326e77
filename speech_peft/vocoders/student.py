"""A fast student of the frozen HiFi-GAN V1: same log-mel in, same 22,050 Hz waveform out.

In the manner of Vocos: every layer runs at the mel frame rate (86 frames/s) instead of the sample
rate — ConvNeXt blocks over the mel frames, a linear head predicting each frame's STFT (log magnitude
and phase, n_fft 1024, hop 256), and an inverse STFT. That is what makes it cheap on a CPU; the
teacher's upsampling stack runs 512 channels at up to 22,050 positions a second.

Trained by distillation (``vocoders/distill.py``): the teacher turns any log-mel into a waveform, so
the student learns from unlimited pairs without a discriminator.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..exports import read_export_info, write_export_info
from ..tensor_files import load_tensors, save_tensors
from . import hifigan

EXPORT_KIND = "student_vocoder"
WEIGHTS_FILE = "student.safetensors"
SHIPPED = Path(__file__).resolve().parents[1] / "pretrained" / "hifigan-student"
MAX_LOG_MAGNITUDE = 4.6  # exp(4.6) ~ 100: the clip keeps early training from exploding


@dataclass(frozen=True)
class StudentConfig:
    n_mels: int = hifigan.N_MELS
    dim: int = 384
    hidden: int = 1152
    blocks: int = 8
    n_fft: int = hifigan.N_FFT
    hop: int = hifigan.HOP

    def to_dict(self) -> dict:
        return asdict(self)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, hidden: int, layer_scale: float):
        super().__init__()
        self.depthwise = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.expand, self.project = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: Tensor) -> Tensor:  # (B, dim, frames)
        y = self.norm(self.depthwise(x).transpose(1, 2))
        y = self.gamma * self.project(F.gelu(self.expand(y)))
        return x + y.transpose(1, 2)


@functools.lru_cache(maxsize=8)
def _overlap_envelope(n_fft: int, hop: int, frames: int, device: str) -> Tensor:
    window = torch.hann_window(n_fft, device=device)
    squares = window.square()[None, :, None].expand(1, n_fft, frames)
    length = (frames - 1) * hop + n_fft
    return F.fold(squares, (1, length), (1, n_fft), stride=(1, hop)).squeeze()


def istft_same(spec: Tensor, n_fft: int, hop: int) -> Tensor:
    """Inverse STFT whose frame t is centred like HiFi-GAN's mel frame t: (B, n_fft//2+1, T) -> (B, T*hop).

    ``torch.istft`` assumes centred frames and leaves the last hop unframed; this overlap-adds every
    frame and trims (n_fft - hop) / 2 from each end, as the teacher's mel padding implies.
    """
    frames = spec.shape[-1]
    window = torch.hann_window(n_fft, device=spec.device)
    chunks = torch.fft.irfft(spec, n_fft, dim=1) * window[None, :, None]
    length = (frames - 1) * hop + n_fft
    wave = F.fold(chunks, (1, length), (1, n_fft), stride=(1, hop))[:, 0, 0]
    envelope = _overlap_envelope(n_fft, hop, frames, str(spec.device))
    pad = (n_fft - hop) // 2
    return (wave / envelope.clamp(min=1e-11))[:, pad:length - pad]


class StudentVocoder(nn.Module):
    """Log-mel (B, 80, frames) -> waveform (B, frames * 256) at 22,050 Hz, as ``hifigan.HiFiGAN``."""

    def __init__(self, config: StudentConfig = StudentConfig()):
        super().__init__()
        self.config = config
        self.embed = nn.Conv1d(config.n_mels, config.dim, 7, padding=3)
        self.norm_in = nn.LayerNorm(config.dim, eps=1e-6)
        self.blocks = nn.ModuleList(ConvNeXtBlock(config.dim, config.hidden, 1.0 / config.blocks)
                                    for _ in range(config.blocks))
        self.norm_out = nn.LayerNorm(config.dim, eps=1e-6)
        self.head = nn.Linear(config.dim, config.n_fft + 2)  # log magnitude and phase of n_fft/2 + 1 bins

    def forward(self, mel: Tensor) -> Tensor:
        x = self.norm_in(self.embed(mel).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        log_magnitude, phase = self.head(self.norm_out(x.transpose(1, 2))).transpose(1, 2).chunk(2, dim=1)
        magnitude = torch.exp(log_magnitude.clamp(max=MAX_LOG_MAGNITUDE))
        spec = torch.polar(magnitude.float(), phase.float())
        return istft_same(spec, self.config.n_fft, self.config.hop)

    def export(self, directory: str | Path, provenance: dict | None = None) -> Path:
        directory = Path(directory)
        # Half precision halves the file (15 MB); loading casts back to float32.
        state = {k: v.detach().half().contiguous().cpu() for k, v in self.state_dict().items()}
        save_tensors(directory / WEIGHTS_FILE, state)
        write_export_info(directory, EXPORT_KIND, {"student": self.config.to_dict(), **(provenance or {})})
        return directory


def load_student(directory: str | Path = SHIPPED) -> StudentVocoder:
    """A distilled student, frozen, in eval mode (by default the one shipped with the package)."""
    directory = Path(directory)
    if not (directory / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"{directory}: no distilled student vocoder ({WEIGHTS_FILE}); distil one with "
                                "'python -m speech_peft.vocoders.distill'")
    config = read_export_info(directory, EXPORT_KIND)["config"]
    model = StudentVocoder(StudentConfig(**config["student"]))
    model.load_state_dict(load_tensors(directory / WEIGHTS_FILE), strict=True)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
