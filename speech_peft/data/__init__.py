"""One manifest format (JSON lines), one audio loader, length-bucketed batching."""
from .audio import AudioError, load_audio
from .manifest import Entry, read_manifest, write_manifest

__all__ = ["AudioError", "Entry", "load_audio", "read_manifest", "write_manifest"]
