"""The restorer (cleaner + vocoder backend) is defined with the vocoders (``vocoders/restorer.py``); this
registers its export kind."""
from ..vocoders.restorer import EXPORT_KIND, Restorer
from .registry import register_model

register_model(EXPORT_KIND, Restorer.from_export)
