"""Batch jobs over files (transcribe, restore, degrade): resumable, atomic, bad inputs listed."""
