"""The restorer that ``speech-peft restore`` runs: the frozen encoder with its cleaner adapters, then a
vocoder backend that turns the cleaned features into a waveform:

- ``hifigan``: a trained bridge (features -> log-mel) in front of the frozen pretrained HiFi-GAN V1,
  or, given ``student``, in front of a student distilled from it (``vocoders/distill.py``: ~20x faster
  on a CPU, at some cost in quality);
- ``wavefit``: a WaveFit vocoder trained on the features themselves (for accelerator-scale training).

Exported by the vocoder or bridge training (``tasks/restoration.py``) as ``cleaner/`` (adapter core
format), ``vocoder.safetensors`` (the trained part: the bridge, or the whole WaveFit) and ``export.json``.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..adapters import load_adapter, save_adapter
from ..encoders.whisper import load_whisper_encoder
from ..errors import UserError
from ..exports import read_export_info, write_export_info
from ..tensor_files import load_tensors, save_tensors
from .bridge import BridgeConfig, BridgedHiFiGAN, FeatureToMel
from .input_gain import DEFAULT_LIMIT_DB, check_attenuation_limit
from .student import load_student
from .wavefit import WaveFit, WaveFitConfig

EXPORT_KIND = "restorer"
BACKENDS = ("hifigan", "wavefit")


def trained_part(vocoder: nn.Module) -> nn.Module:
    """What a backend trains (and its export stores): the bridge of ``hifigan``, all of ``wavefit``."""
    return vocoder.bridge if isinstance(vocoder, BridgedHiFiGAN) else vocoder


class Restorer(nn.Module):
    def __init__(self, encoder: nn.Module, vocoder: BridgedHiFiGAN | WaveFit, encoder_name: str, tap_layer: int):
        super().__init__()
        self.encoder, self.vocoder = encoder.eval(), vocoder.eval()
        self.encoder_name, self.tap_layer = encoder_name, tap_layer

    @property
    def backend(self) -> str:
        return "hifigan" if isinstance(self.vocoder, BridgedHiFiGAN) else "wavefit"

    @torch.inference_mode()
    def forward(self, waves: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(B, samples) degraded 16 kHz audio -> restored 16 kHz audio of (about) the same length."""
        if self.backend == "wavefit":
            return self.vocoder.synthesise(self.encoder(waves, lengths).hidden, waves.shape[-1])
        feats = self.encoder(waves, lengths).hidden if self.vocoder.bridge.config.reads_features else None
        return self.vocoder.synthesise(feats, waves.shape[-1], waves=waves)

    def export(self, directory: str | Path) -> Path:
        directory = Path(directory)
        save_adapter(self.encoder, directory / "cleaner", name="cleaner", base_model_name=self.encoder_name)
        part = trained_part(self.vocoder)
        save_tensors(directory / "vocoder.safetensors", part.state_dict())
        config = {"encoder_name": self.encoder_name, "tap_layer": self.tap_layer, "backend": self.backend,
                  "vocoder": part.config.to_dict()}
        if self.backend == "hifigan":
            config["hifigan_weights"] = self.vocoder.weights
            config["synthesis"] = self.vocoder.synthesis
            if self.vocoder.synthesis == "input_gain":
                config["attenuation_limit_db"] = self.vocoder.attenuation_limit_db
        write_export_info(directory, EXPORT_KIND, config)
        return directory

    @classmethod
    def from_export(cls, directory: str | Path, student: str | Path | None = None,
                    synthesis: str | None = None, attenuation_limit_db: float | None = None) -> Restorer:
        """``student``: a distilled student's export, speaking in place of HiFi-GAN V1 (``hifigan`` only);
        ``synthesis``: ``vocoder`` or ``input_gain`` in place of the export's own (``hifigan`` only);
        ``attenuation_limit_db``: the most input_gain synthesis lowers a band, in place of the export's own
        (exports that name none: 20 dB)."""
        directory = Path(directory)
        config = read_export_info(directory, EXPORT_KIND)["config"]
        backend = config.get("backend", "wavefit")
        if backend not in BACKENDS:
            raise UserError(f"{directory}: unknown vocoder backend {backend!r} ({', '.join(BACKENDS)})")
        if student is not None and backend != "hifigan":
            raise UserError(f"{directory}: a {backend} restorer has no HiFi-GAN for a student to replace")
        if synthesis is not None and backend != "hifigan":
            raise UserError(f"{directory}: a {backend} restorer has no log-mel to apply as a gain")
        synthesis = synthesis or config.get("synthesis", "vocoder")
        if student is not None and synthesis == "input_gain":
            raise UserError(f"{directory}: input_gain synthesis speaks through no vocoder; --student needs --synthesis vocoder")
        if attenuation_limit_db is not None and synthesis != "input_gain":
            raise UserError(f"{directory}: an attenuation limit applies to input_gain synthesis, not to {synthesis}")
        if attenuation_limit_db is None:
            attenuation_limit_db = config.get("attenuation_limit_db", DEFAULT_LIMIT_DB)
        check_attenuation_limit(attenuation_limit_db)  # before the encoder loads
        encoder = load_whisper_encoder(config["encoder_name"], tap_layer=config["tap_layer"])
        load_adapter(encoder, directory / "cleaner")
        state = load_tensors(directory / "vocoder.safetensors")
        if backend == "hifigan":
            bridge = FeatureToMel(BridgeConfig(**config["vocoder"]))
            bridge.load_state_dict(state, strict=True)
            generator = load_student(student) if student is not None else None
            vocoder = BridgedHiFiGAN(bridge, generator, weights=config.get("hifigan_weights", "universal"),
                                     synthesis=synthesis, attenuation_limit_db=attenuation_limit_db)
        else:
            vocoder = WaveFit(WaveFitConfig(**config["vocoder"]))
            vocoder.load_state_dict(state, strict=True)
        return cls(encoder, vocoder, config["encoder_name"], config["tap_layer"])
