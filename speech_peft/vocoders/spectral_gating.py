"""The denoiser people reach for instead of a trained restorer: spectral gating (``noisereduce``), as a
restorer that ``speech-peft restore --baseline spectral-gating`` runs. It learns nothing and keeps the
input's own signal where it is above the noise it estimates, so it sets the bar a trained restorer must
clear beside "do nothing"."""
from __future__ import annotations

import torch
from torch import Tensor, nn

NAME = "spectral-gating"


class SpectralGating(nn.Module):
    """Non-stationary spectral gating (noisereduce's default), each file on its own."""

    backend = NAME
    package = "noisereduce"  # its version names the outputs' restorer

    def __init__(self, sample_rate: int = 16000, prop_decrease: float = 1.0):
        super().__init__()
        import noisereduce  # noqa: F401  (a clear ImportError at load, not at the first file)

        self.sample_rate, self.prop_decrease = sample_rate, prop_decrease

    @torch.inference_mode()
    def forward(self, waves: Tensor, lengths: Tensor | None = None) -> Tensor:
        import noisereduce

        rows = [noisereduce.reduce_noise(y=w.detach().cpu().double().numpy(), sr=self.sample_rate,
                                         prop_decrease=self.prop_decrease) for w in waves]
        return torch.stack([torch.from_numpy(r).to(waves.dtype) for r in rows]).to(waves.device)
