"""The command line's verbs, one module each (``add_parser`` + the function it runs); ``cli.py``
assembles them into ``speech-peft``."""

VERBS = ("fit", "validate", "test", "predict")  # Lightning's verbs, run over the Hydra configs (train.py)
