"""Audio Spectrogram Transformer (transformers ``ASTModel``) on raw audio.

Features follow AST: Kaldi fbank via torchaudio (128 mel bins, 25 ms Hann window, 10 ms shift,
no dither), padded or cut to ``max_length`` frames, normalised with the AudioSet mean and std.
Position embeddings are resized (bilinear over the time axis of the patch grid) when the
configured frame length differs from the checkpoint's.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torchaudio
from torch import Tensor, nn

from .base import EncoderOutput, FrozenEncoder, lengths_or_full

AUDIOSET_MEAN, AUDIOSET_STD = -4.2677393, 4.5689974


def ast_fbank(wave: Tensor, num_mel_bins: int = 128, max_length: int = 1024) -> Tensor:
    """(samples,) 16 kHz -> (max_length, num_mel_bins), normalised."""
    wave = wave - wave.mean()
    fbank = torchaudio.compliance.kaldi.fbank(
        wave[None], htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
        num_mel_bins=num_mel_bins, dither=0.0, frame_shift=10, frame_length=25)
    if fbank.shape[0] < max_length:
        fbank = nn.functional.pad(fbank, (0, 0, 0, max_length - fbank.shape[0]))
    fbank = fbank[:max_length]
    return (fbank - AUDIOSET_MEAN) / (AUDIOSET_STD * 2)


def resize_time_positions(model: nn.Module, max_length: int) -> None:
    """Re-grid AST's patch position embeddings for inputs of ``max_length`` frames."""
    config = model.config
    emb = model.embeddings
    f_dim = (config.num_mel_bins - config.patch_size) // config.frequency_stride + 1
    old_t = (config.max_length - config.patch_size) // config.time_stride + 1
    new_t = (max_length - config.patch_size) // config.time_stride + 1
    if new_t == old_t:
        return
    pos = emb.position_embeddings.data
    special, grid = pos[:, :2], pos[:, 2:]
    grid = grid.reshape(1, f_dim, old_t, -1).permute(0, 3, 1, 2)
    grid = nn.functional.interpolate(grid, size=(f_dim, new_t), mode="bilinear", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, f_dim * new_t, -1)
    emb.position_embeddings = nn.Parameter(torch.cat([special, grid], dim=1), requires_grad=False)
    config.max_length = max_length


class ASTEncoderModel(FrozenEncoder):
    def __init__(self, model: nn.Module, max_length: int | None = None, name: str = "ast"):
        super().__init__()
        if max_length is not None:
            resize_time_positions(model, max_length)
        self.model = model
        self.max_length = model.config.max_length
        self.num_mel_bins = model.config.num_mel_bins
        self.dim = model.config.hidden_size
        self.name = name

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.layers

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None, output_layers: bool = False) -> EncoderOutput:
        lengths = lengths_or_full(waveforms, lengths)
        feats = torch.stack([ast_fbank(w[: int(n)], self.num_mel_bins, self.max_length)
                             for w, n in zip(waveforms, lengths)])
        out = self.model(feats, output_hidden_states=output_layers)
        hidden = out.last_hidden_state
        mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        layers = list(out.hidden_states[1:]) if output_layers else None
        return EncoderOutput(hidden, mask, layers)


def load_ast_encoder(directory: str | Path, max_length: int | None = None) -> ASTEncoderModel:
    from transformers import ASTModel

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory}: no AST model here (config.json missing)")
    model = ASTModel.from_pretrained(directory, local_files_only=True).eval()
    return ASTEncoderModel(model, max_length, name=str(directory))
