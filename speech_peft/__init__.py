"""speech_peft: parameter-efficient adaptation of frozen speech and audio encoders."""

__version__ = "0.1.0"
