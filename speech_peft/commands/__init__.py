"""The command line's verbs, one module each (``add_parser`` + the function it runs); ``cli.py``
assembles them into ``speech-peft``."""
