"""Trained models without a trainer: each a plain ``nn.Module`` that saves and loads its export
(``save(directory)`` / ``load(directory)``) and runs inference; ``load_model(EXPORT_DIR)`` finds the one an
export's kind names. The Lightning tasks (``tasks/``) train these same classes."""
from . import adapter_fusion, classifier, diffusion_asr, whisper_ar  # noqa: F401  (register their export kinds)
from ..vocoders.restorer import EXPORT_KIND as RESTORER_EXPORT
from ..vocoders.restorer import Restorer
from .registry import load_model, model_kinds, register_model

register_model(RESTORER_EXPORT, Restorer.from_export)  # cleaner + vocoder, defined with the vocoders

__all__ = ["load_model", "model_kinds", "register_model"]
