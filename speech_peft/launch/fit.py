"""What a data-parallel ``speech-peft fit`` runs in its other processes.

Lightning starts each further process as ``python <sys.argv[0]> <overrides>``; the fit verb names this file
as its ``sys.argv[0]`` so that command is again a fit over the same overrides. (Kept in a folder of its own:
Python puts a script's folder first on the import path.)
"""
import sys

if __name__ == "__main__":
    from speech_peft.commands.train import run_verb

    sys.exit(run_verb("fit", sys.argv[1:]))
