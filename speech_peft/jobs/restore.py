"""Batch restoration (``speech-peft restore IN OUT --checkpoint RESTORER_EXPORT``).

``restore`` runs in this process; ``tasks/parallel_restore.py`` runs the same steps in several processes
(DDP), each restoring its own shard of the inputs (``entries[rank::world]``), so every input is restored
exactly once. Outputs are written atomically; outputs that already exist are skipped, so a killed run
resumes. An input that cannot be restored (corrupt, empty, too short, absurdly long: found from its header
before anything is written; NaN samples: found when it is read) is an error naming it, or with
``skip_bad`` goes to ``OUT/rejects.tsv`` with the reason. Output names and relative layout mirror the
input; OUT may not be inside the input.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..adapters import set_active_adapters
from ..data.audio import AudioError, load_audio, probe, save_audio
from ..data.builders import from_folder
from ..data.inputs import refuse_shared_ids
from ..data.manifest import Entry, read_manifest
from ..data.rejects import Rejects
from ..errors import UserError
from ..fileio import folder_digest, remove_stale_temporaries, write_json
from ..models import load_model
from ..vocoders.restorer import EXPORT_KIND as RESTORER_EXPORT
from ..vocoders.restorer import Restorer
from ..vocoders.rnnoise import NAME as RNNOISE
from ..vocoders.rnnoise import RNNoise
from ..vocoders.spectral_gating import NAME as SPECTRAL_GATING
from ..vocoders.spectral_gating import SpectralGating
from .devices import first_process, torch_device

log = logging.getLogger(__name__)
BASELINES = {SPECTRAL_GATING: SpectralGating, RNNOISE: RNNoise}  # trained on nothing here: the bar beside doing nothing
SHIPPED_RESTORER = Path(__file__).resolve().parents[1] / "pretrained" / "restorer-whisper-tiny.en"
MARKER = "restorer.json"  # in the output folder: which restorer wrote it


def plan(inputs: str, out_dir: str, skip_bad: bool = False) -> tuple[list[Entry], Path]:
    """Entries to restore (ids: paths relative to the input folder) and the output root."""
    src, out = Path(inputs).resolve(), Path(out_dir).resolve()
    guard = src if src.is_dir() else src.parent
    if out == guard or guard in out.parents:
        raise UserError(f"output folder {out} lies inside the input {guard}: restore never writes into its input")
    # Every DDP process plans the same list; only the first lists unreadable inputs in the rejects file.
    rejects = out / "rejects.tsv" if first_process() else None
    if src.is_dir():
        out.mkdir(parents=True, exist_ok=True)
        entries = from_folder(src, skip_bad=skip_bad, rejects_path=rejects)  # ids: relative paths, no suffix
    elif src.suffix == ".jsonl":
        entries = read_manifest(src)
    else:
        raise UserError(f"{inputs}: give a folder of audio or a .jsonl manifest")
    entries = _restorable(refuse_shared_ids(entries), skip_bad, rejects)
    for entry in entries:
        if Path(entry.audio).resolve().parent == out or out in Path(entry.audio).resolve().parents:
            raise UserError(f"input {entry.audio} lies inside the output folder {out}")
    return entries, out


def _restorable(entries: list[Entry], skip_bad: bool, rejects_path: Path | None) -> list[Entry]:
    """The entries whose audio can be read and is long enough to restore (from the header, so a bad file
    fails the job before it writes anything); without ``skip_bad`` the first bad one is an error naming it."""
    rejects, kept = Rejects(rejects_path), []
    for entry in entries:
        try:
            probe(entry.audio)  # unreadable, empty, too short or absurdly long
        except AudioError as err:
            rejects.skip_or_raise(err, skip_bad)
            continue
        kept.append(entry)
    return kept


def read_input(entry: Entry, rejects: Rejects, skip_bad: bool) -> torch.Tensor | None:
    """The entry's samples, or None when they cannot be restored (a header that passed but samples that do
    not: NaN, infinite) and the user asked to skip such inputs."""
    try:
        return load_audio(entry.audio, 16000)
    except AudioError as err:
        rejects.skip_or_raise(err, skip_bad)
        return None


@dataclass(frozen=True)
class RestorerChoice:
    """Which restorer writes an output folder, and how: a restorer export or a baseline (``spectral-gating``,
    ``rnnoise``; with ``attenuation_limit_db``, RNNoise only lowers the input by that much); ``student``: a
    distilled student speaking in place of HiFi-GAN V1;
    ``copy_synthesis``: cleaner off (the vocoder's ceiling on clean input); ``synthesis`` (``vocoder`` or
    ``input_gain``) and ``attenuation_limit_db``: in place of the export's own."""

    checkpoint: str
    student: str | None = None
    copy_synthesis: bool = False
    synthesis: str | None = None
    attenuation_limit_db: float | None = None

    def load(self) -> Restorer:
        if self.checkpoint in BASELINES:
            options = [("--student", self.student), ("--copy-synthesis", self.copy_synthesis),
                       ("--synthesis", self.synthesis)]
            if self.checkpoint == SPECTRAL_GATING:  # RNNoise takes a limit: how far toward its output to go
                options.append(("--attenuation-limit-db", self.attenuation_limit_db))
            given = [flag for flag, value in options if value is not None and value is not False]
            if given:
                raise UserError(f"{self.checkpoint} has no vocoder: {', '.join(given)} do not apply")
            if self.checkpoint == RNNOISE:
                return RNNoise(attenuation_limit_db=self.attenuation_limit_db)
            return SpectralGating()
        restorer = load_model(self.checkpoint, RESTORER_EXPORT, student=self.student, synthesis=self.synthesis,
                              attenuation_limit_db=self.attenuation_limit_db)
        if self.copy_synthesis:  # the encoder's own features, uncleaned
            set_active_adapters(restorer.encoder, [])
        return restorer.eval()

    def identity(self) -> str:
        """A hash of the restorer's files (and the student's) and of the options: outputs of one identity
        never mix with another's."""
        if self.checkpoint in BASELINES:
            from importlib.metadata import version

            package = BASELINES[self.checkpoint].package
            limit = "" if self.attenuation_limit_db is None else f"-limit{self.attenuation_limit_db:g}"
            return f"{self.checkpoint}-{package}-{version(package)}{limit}"
        mode = f"{self.copy_synthesis}" if self.synthesis is None else f"{self.copy_synthesis}-{self.synthesis}"
        if self.attenuation_limit_db is not None:
            mode += f"-limit{self.attenuation_limit_db:g}"
        files = [self.checkpoint] if self.student is None else [self.checkpoint, self.student]
        return folder_digest(files, mode.encode())

    def model_dirs(self) -> list[Path]:
        return [Path(d).resolve() for d in (self.checkpoint, self.student) if d and d not in BASELINES]


@torch.no_grad()
def restore_one(restorer: Restorer, entry: Entry, wave: torch.Tensor, out: Path, ledger_rank: int | None = None) -> None:
    """Restore and write one input; ``ledger_rank``: note which process wrote it (a check that each input
    is restored once)."""
    device = next(restorer.parameters(), torch.empty(0)).device  # spectral gating has no parameters
    restored = restorer(wave[None].to(device))[0].cpu()
    restored = torch.nn.functional.pad(restored, (0, max(0, len(wave) - len(restored))))[: len(wave)]
    save_audio(out / f"{entry.id}.wav", restored.clamp(-1, 1), 16000)
    if ledger_rank is not None:
        with open(out / f".ledger.{ledger_rank}", "a") as handle:
            handle.write(f"{entry.id}\n")


def prepare(inputs: str, out_dir: str, choice: RestorerChoice,
            skip_bad: bool = False) -> tuple[list[Entry], list[Entry], Path]:
    """Every entry, those still to restore (finished outputs stay: a resumed run skips them), and the output
    folder, claimed for this restorer by the first process before any other starts."""
    target = Path(out_dir).resolve()
    for root in choice.model_dirs():
        if target == root or root in target.parents:
            raise UserError(f"output folder {target} lies inside the model folder {root}: outputs there would "
                             "change the files that identify the model; choose another place")
    entries, out = plan(inputs, out_dir, skip_bad)
    out.mkdir(parents=True, exist_ok=True)
    if first_process():  # before any other process starts: temporaries of a killed run go
        _claim(out, choice)
        remove_stale_temporaries(out)
    return entries, [e for e in entries if not finished(e, out / f"{e.id}.wav")], out


def finished(entry: Entry, output: Path) -> bool:
    """Whether ``output`` is this entry's whole restoration (a resumed run keeps it): readable, not cut off,
    and as long as the input at 16 kHz. Outputs are written whole, so a short or empty one was damaged or
    replaced after the run; it is restored again, and said so."""
    if not output.exists():
        return False
    frames, rate, _ = probe(entry.audio)
    expected = math.ceil(frames * 16000 / rate)
    try:
        got, got_rate, _ = probe(output, min_seconds=0)
        if got_rate != 16000 or got != expected:
            raise AudioError(output, f"{got} samples at {got_rate} Hz, not the input's {expected} at 16000 Hz")
    except AudioError as err:
        log.warning("restore: restoring %s again: its output %s", entry.audio, err)
        return False
    return True


def restore(inputs: str, out_dir: str, choice: RestorerChoice, ledger: bool = False, progress: bool = True,
            device: str = "cpu", skip_bad: bool = False) -> dict[str, int]:
    """``device``: cpu, cuda or auto; ``skip_bad``: list unreadable inputs in ``OUT/rejects.tsv`` and restore
    the rest."""
    target = torch_device(device)
    restorer = choice.load()  # refused options claim no folder
    entries, todo, out = prepare(inputs, out_dir, choice, skip_bad)
    restorer = restorer.to(target)
    rejects, written = Rejects(out / "rejects.tsv"), 0
    for entry in tqdm(todo, desc="restore", unit="file", disable=not progress):
        wave = read_input(entry, rejects, skip_bad)
        if wave is not None:
            restore_one(restorer, entry, wave, out, 0 if ledger else None)
            written += 1
    return {"inputs": len(entries), "skipped_existing": len(entries) - len(todo), "restored_here": written}


def _claim(out: Path, choice: RestorerChoice) -> None:
    """Record which restorer writes ``out``; a resumed run must be the same one, so a folder never holds
    the outputs of two restorers (kept outputs are skipped, so they would silently stay)."""
    marker = out / MARKER
    identity = {"restorer": choice.identity(),
                "checkpoint": choice.checkpoint if choice.checkpoint in BASELINES else
                str(Path(choice.checkpoint).resolve()),
                "copy_synthesis": choice.copy_synthesis,
                "student": str(Path(choice.student).resolve()) if choice.student else None,
                "synthesis": choice.synthesis, "attenuation_limit_db": choice.attenuation_limit_db}
    if marker.exists():
        before = json.loads(marker.read_text())
        if before.get("restorer") != identity["restorer"]:
            raise UserError(f"{out} holds outputs of another restorer ({before.get('checkpoint')}"
                             f"{', copy-synthesis' if before.get('copy_synthesis') else ''}): "
                             "choose a new output folder, or move that one away")
        return
    write_json(marker, identity)


def shipped_restorer() -> Path:
    """The restorer that ships with the package (trained by ``recipes/speech_samples/restore``)."""
    if not (SHIPPED_RESTORER / "export.json").is_file():
        raise FileNotFoundError(f"no shipped restorer at {SHIPPED_RESTORER}: give --checkpoint RESTORER_EXPORT")
    return SHIPPED_RESTORER
