"""Trained models without a trainer: each a plain ``nn.Module`` that saves and loads its export
(``save(directory)`` / ``load(directory)``) and runs inference; ``load_model(EXPORT_DIR)`` finds the one an
export's kind names, importing only that model's module. The Lightning tasks (``tasks/``) train these same
classes."""
from .registry import load_model, model_kinds, register_model

__all__ = ["load_model", "model_kinds", "register_model"]
