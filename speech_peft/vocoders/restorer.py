"""The restorer that ``speech-peft restore`` runs: the frozen encoder with its cleaner adapters, then
the vocoder. Exported by the vocoder's training (``tasks/restoration.py``) as ``cleaner/`` (adapter
core format), ``vocoder.safetensors`` and ``export.json``."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..adapters import load_adapter, save_adapter
from ..encoders.whisper import load_whisper_encoder
from ..exports import read_export_info, write_export_info
from ..fileio import atomic_write
from .wavefit import WaveFit, WaveFitConfig

EXPORT_KIND = "restorer"


class Restorer(nn.Module):
    def __init__(self, encoder: nn.Module, vocoder: WaveFit, encoder_name: str, tap_layer: int):
        super().__init__()
        self.encoder, self.vocoder = encoder.eval(), vocoder.eval()
        self.encoder_name, self.tap_layer = encoder_name, tap_layer

    @torch.inference_mode()
    def forward(self, waves: Tensor, lengths: Tensor | None = None) -> Tensor:
        hop = self.vocoder.config.hop
        feats = self.encoder(waves, lengths).hidden
        torch.manual_seed(0)  # the vocoder starts from noise: fixed, so a file restores the same every time
        return self.vocoder(feats, return_all=False)[-1][:, : waves.shape[-1] // hop * hop]

    def export(self, directory: str | Path) -> Path:
        directory = Path(directory)
        save_adapter(self.encoder, directory / "cleaner", name="cleaner", base_model_name=self.encoder_name)
        state = {k: v.detach().contiguous().cpu() for k, v in self.vocoder.state_dict().items()}
        atomic_write(directory / "vocoder.safetensors", lambda tmp: save_file(state, tmp))
        write_export_info(directory, EXPORT_KIND, {"encoder_name": self.encoder_name, "tap_layer": self.tap_layer,
                                                   "vocoder": self.vocoder.config.to_dict()})
        return directory

    @classmethod
    def from_export(cls, directory: str | Path) -> "Restorer":
        directory = Path(directory)
        config = read_export_info(directory, EXPORT_KIND)["config"]
        encoder = load_whisper_encoder(config["encoder_name"], tap_layer=config["tap_layer"])
        load_adapter(encoder, directory / "cleaner")
        vocoder = WaveFit(WaveFitConfig(**config["vocoder"]))
        vocoder.load_state_dict(load_file(directory / "vocoder.safetensors"), strict=True)
        return cls(encoder, vocoder, config["encoder_name"], config["tap_layer"])
