"""Vocoders: features back to waveforms."""
