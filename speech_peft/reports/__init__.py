"""Results tables regenerated from what the runs wrote (``fit_result.json``, evaluation JSON)."""
