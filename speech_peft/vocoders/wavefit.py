"""WaveFit (Koizumi et al., 2022): a fixed-point-iteration vocoder.

Starting from noise at the target loudness, each of T iterations computes
``y_t = gain_normalise(y_{t-1} - G(y_{t-1}, c, t))``: G estimates the remaining distortion from the
current waveform, the upsampled conditioning features c and the iteration index, and gain
normalisation rescales the result to the loudness the features imply. Training sums a
multi-resolution STFT loss (spectral convergence + log magnitude) over every iteration's output;
multi-period / multi-scale discriminators with feature matching can be added.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from ..errors import UserError


@dataclass
class WaveFitConfig:
    feature_dim: int = 384
    hop: int = 320                          # waveform samples per feature frame (Whisper: 20 ms at 16 kHz)
    upsample: tuple[int, ...] = (4, 4, 4, 5)
    channels: int = 24                      # small: the whole stream runs at the waveform rate on CPU
    blocks: int = 4
    iterations: int = 5
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        self.upsample = tuple(self.upsample)
        if math.prod(self.upsample) != self.hop:
            raise UserError(f"upsample factors {self.upsample} multiply to {math.prod(self.upsample)}, not hop {self.hop}")

    def to_dict(self) -> dict:
        return {**asdict(self), "upsample": list(self.upsample)}


class FiLMBlock(nn.Module):
    """Dilated residual convolution on the waveform stream, modulated by the conditioning."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.film = nn.Conv1d(channels, 2 * channels, 1)
        self.out = nn.Conv1d(channels, channels, 1)

    def forward(self, h: Tensor, cond: Tensor) -> Tensor:
        scale, shift = self.film(cond).chunk(2, dim=1)
        z = self.conv(F.leaky_relu(h, 0.2)) * (1 + scale) + shift
        return h + self.out(F.leaky_relu(z, 0.2))


class WaveFit(nn.Module):
    def __init__(self, config: WaveFitConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.cond_in = nn.Conv1d(config.feature_dim, c, 3, padding=1)
        self.cond_up = nn.ModuleList(nn.ConvTranspose1d(c, c, 2 * f, f, padding=f // 2 + f % 2, output_padding=f % 2)
                                     for f in config.upsample)
        self.step_embedding = nn.Embedding(config.iterations, c)
        self.wave_in = nn.Conv1d(1, c, 7, padding=3)
        self.blocks = nn.ModuleList(FiLMBlock(c, 2 ** (i % 4)) for i in range(config.blocks))
        self.wave_out = nn.Conv1d(c, 1, 7, padding=3)
        self.log_power = nn.Linear(config.feature_dim, 1)  # frame log-power the features imply

    def condition(self, features: Tensor, samples: int) -> Tensor:
        h = self.cond_in(features.transpose(1, 2))
        for up in self.cond_up:
            h = F.leaky_relu(up(F.leaky_relu(h, 0.2)), 0.2)
        return _fit(h, samples)

    def target_power(self, features: Tensor) -> Tensor:
        """Mean waveform power per utterance, (B, 1), predicted from the features."""
        return self.log_power(features).exp().mean(dim=1)

    def gain_normalise(self, y: Tensor, power: Tensor) -> Tensor:
        return y * torch.sqrt(power / y.pow(2).mean(dim=-1, keepdim=True).clamp(min=1e-10))

    def forward(self, features: Tensor, noise: Tensor | None = None, return_all: bool = True) -> list[Tensor]:
        """Waveforms (B, frames * hop) after each iteration (only the last unless ``return_all``)."""
        b, frames, _ = features.shape
        samples = frames * self.config.hop
        cond = self.condition(features, samples)
        power = self.target_power(features)
        y = noise if noise is not None else torch.randn(b, samples, device=features.device)
        y = self.gain_normalise(y, power)
        outputs = []
        for t in range(self.config.iterations):
            step = cond + self.step_embedding.weight[t][None, :, None]
            h = self.wave_in(y[:, None])
            for block in self.blocks:
                h = block(h, step)
            y = self.gain_normalise(y - self.wave_out(h)[:, 0], power)
            if return_all or t == self.config.iterations - 1:
                outputs.append(y)
        return outputs

    def synthesise(self, features: Tensor, samples: int) -> Tensor:
        """The restorer's vocoder interface: (B, T, D) features -> (B, samples rounded down to the hop).
        The start noise is seeded, so the same input always gives the same waveform."""
        noise = torch.randn(features.shape[0], features.shape[1] * self.config.hop,
                            generator=torch.Generator().manual_seed(0)).to(features)
        return self(features, noise, return_all=False)[-1][:, : samples // self.config.hop * self.config.hop]


def _fit(x: Tensor, length: int) -> Tensor:
    return x[..., :length] if x.shape[-1] >= length else F.pad(x, (0, length - x.shape[-1]))


STFT_RESOLUTIONS = ((512, 50, 240), (1024, 120, 600), (2048, 240, 1200))


def stft_magnitude(x: Tensor, n_fft: int, hop: int, win: int) -> Tensor:
    spec = torch.stft(x, n_fft, hop, win, window=torch.hann_window(win, device=x.device), return_complex=True)
    return spec.abs().clamp(min=1e-5)


def multi_resolution_stft_loss(estimate: Tensor, target: Tensor) -> Tensor:
    """Spectral convergence + log-magnitude L1, averaged over three STFT resolutions."""
    total = estimate.new_zeros(())
    for n_fft, hop, win in STFT_RESOLUTIONS:
        s, s_hat = stft_magnitude(target, n_fft, hop, win), stft_magnitude(estimate, n_fft, hop, win)
        sc = torch.linalg.norm(s - s_hat, dim=(-2, -1)) / torch.linalg.norm(s, dim=(-2, -1)).clamp(min=1e-7)
        total = total + sc.mean() + F.l1_loss(s_hat.log(), s.log())
    return total / len(STFT_RESOLUTIONS)


def wavefit_loss(outputs: list[Tensor], target: Tensor) -> Tensor:
    """Sum over iterations of the multi-resolution STFT loss (WaveFit trains every iteration)."""
    return sum(multi_resolution_stft_loss(y, target) for y in outputs)


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, channels: int = 16):
        super().__init__()
        self.period = period
        self.convs = nn.ModuleList([nn.Conv2d(1, channels, (5, 1), (3, 1), (2, 0)),
                                    nn.Conv2d(channels, channels * 2, (5, 1), (3, 1), (2, 0)),
                                    nn.Conv2d(channels * 2, channels * 2, (3, 1), 1, (1, 0))])
        self.out = nn.Conv2d(channels * 2, 1, (3, 1), 1, (1, 0))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        pad = (-x.shape[-1]) % self.period
        h = F.pad(x, (0, pad), mode="reflect").view(x.shape[0], 1, -1, self.period)
        feats = []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
            feats.append(h)
        return self.out(h).flatten(1), feats


class ScaleDiscriminator(nn.Module):
    def __init__(self, pool: int, channels: int = 16):
        super().__init__()
        self.pool = nn.AvgPool1d(pool, pool) if pool > 1 else nn.Identity()
        self.convs = nn.ModuleList([nn.Conv1d(1, channels, 15, 1, 7), nn.Conv1d(channels, channels * 2, 41, 4, 20, groups=4),
                                    nn.Conv1d(channels * 2, channels * 2, 41, 4, 20, groups=8)])
        self.out = nn.Conv1d(channels * 2, 1, 3, 1, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        h = self.pool(x[:, None])
        feats = []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
            feats.append(h)
        return self.out(h).flatten(1), feats


class Discriminators(nn.Module):
    """Multi-period (2, 3, 5, 7, 11) and multi-scale (1, 2, 4) discriminators, HiFi-GAN style."""

    def __init__(self, channels: int = 16):
        super().__init__()
        self.members = nn.ModuleList([*(PeriodDiscriminator(p, channels) for p in (2, 3, 5, 7, 11)),
                                      *(ScaleDiscriminator(s, channels) for s in (1, 2, 4))])

    def forward(self, x: Tensor) -> list[tuple[Tensor, list[Tensor]]]:
        return [m(x) for m in self.members]


def adversarial_losses(disc: Discriminators, fake: Tensor, real: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(discriminator loss, generator loss, feature-matching loss), least-squares GAN."""
    real_out, fake_detached = disc(real), disc(fake.detach())
    d_loss = sum(((1 - r) ** 2).mean() + (f ** 2).mean() for (r, _), (f, _) in zip(real_out, fake_detached))
    fake_out = disc(fake)
    g_loss = sum(((1 - f) ** 2).mean() for f, _ in fake_out)
    fm = sum(F.l1_loss(ff, rf.detach()) for (_, rfs), (_, ffs) in zip(real_out, fake_out) for rf, ff in zip(rfs, ffs))
    return d_loss, g_loss, fm
