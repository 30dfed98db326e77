"""Sharded data for corpora that do not fit one disk or one pass of random reads.

``speech-peft shard MANIFEST OUT`` packs a manifest's audio into tar shards in the WebDataset layout
(``<key>.<audio suffix>`` with the audio file's own bytes, ``<key>.json`` with the entry's fields), each
written atomically, plus ``OUT/shards.json`` (shards, items, seconds). Shards are read in order, one file at
a time, so they stream from any disk or object store mount; WebDataset reads them too.

``ShardedAudioDataset`` streams them: shards in an order seeded by (seed, epoch), split between
data-parallel processes and loader workers, items shuffled in a buffer; every process yields the same
number of items (the shortest share; a short share is topped up from its own start) so DDP steps stay in
lockstep. ``state_dict()`` records how far an epoch went; loaded into a new dataset it resumes the same
stream where it stopped (exact with ``num_workers=0``).
"""
from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import UserError
from ..fileio import atomic_write, write_json
from .audio import AudioError, decode_audio, probe
from .manifest import Entry, read_manifest
from .rejects import Rejects

INDEX = "shards.json"
META_FIELDS = ("id", "duration", "sample_rate", "text", "label", "task", "speaker", "language")


def write_shards(manifest: str | Path, out_dir: str | Path, items_per_shard: int = 1000,
                 skip_bad: bool = False) -> Path:
    """Shards of ``items_per_shard`` entries and their index; shards already written are kept (a killed
    run resumes). An unreadable file is an error naming it, or with ``skip_bad`` a line in OUT/rejects.tsv."""
    if items_per_shard < 1:
        raise UserError(f"items_per_shard must be at least 1, got {items_per_shard}")
    out = Path(out_dir)
    entries = read_manifest(manifest)
    if not entries:
        raise UserError(f"{manifest}: no entries to shard")
    rejects = Rejects(out / "rejects.tsv" if skip_bad else None)
    shards = []
    for number, start in enumerate(range(0, len(entries), items_per_shard)):
        path = out / f"shard-{number:06d}.tar"
        if not path.exists():
            atomic_write(path, lambda tmp, chunk=entries[start:start + items_per_shard], first=start:
                         _write_tar(tmp, chunk, first, rejects, skip_bad))
        metas = _metas(path)
        shards.append({"name": path.name, "items": len(metas),
                       "seconds": round(sum(m.get("duration", 0.0) for m in metas), 3)})
    write_json(out / INDEX, {"source": str(Path(manifest).resolve()), "items": sum(s["items"] for s in shards),
                             "seconds": round(sum(s["seconds"] for s in shards), 3), "shards": shards})
    return out / INDEX


def _write_tar(tmp: str, chunk: list[Entry], first: int, rejects: Rejects, skip_bad: bool) -> None:
    with tarfile.open(tmp, "w") as tar:
        for offset, entry in enumerate(chunk):
            try:
                probe(entry.audio)
            except AudioError as err:
                rejects.skip_or_raise(err, skip_bad)
                continue
            key = f"{first + offset:09d}"
            meta = {k: getattr(entry, k) for k in META_FIELDS if getattr(entry, k) is not None}
            for name, data in ((f"{key}{Path(entry.audio).suffix.lower()}", Path(entry.audio).read_bytes()),
                               (f"{key}.json", json.dumps(meta, ensure_ascii=False).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _metas(path: Path) -> list[dict]:
    """The JSON fields of a shard's items, its audio left unread (the index needs counts and seconds)."""
    try:
        with tarfile.open(path, "r") as tar:
            return [json.loads(tar.extractfile(m).read()) for m in tar if m.isfile() and m.name.endswith(".json")]
    except (tarfile.TarError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: broken shard ({err})") from None


def _members(path: Path) -> Iterator[tuple[str, dict, bytes]]:
    """(key, metadata, audio bytes) of a shard, in order; a broken shard is an error naming it."""
    try:
        with tarfile.open(path, "r") as tar:
            pending: dict[str, dict] = {}
            for member in tar:
                key, _, suffix = member.name.partition(".")
                data = tar.extractfile(member).read() if member.isfile() else b""
                item = pending.setdefault(key, {})
                item["meta" if suffix == "json" else "audio"] = data
                if "meta" in item and "audio" in item:
                    del pending[key]
                    yield key, json.loads(item["meta"]), item["audio"]
    except (tarfile.TarError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: broken shard ({err})") from None


def read_index(directory: str | Path) -> dict:
    path = Path(directory) / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {INDEX}: not a shard folder (write one with speech-peft shard)")
    return json.loads(path.read_text(encoding="utf-8"))


def is_shard_folder(path: str | Path | None) -> bool:
    return path is not None and (Path(path) / INDEX).is_file()


class ShardedAudioDataset(IterableDataset):
    """(entry, waveform) items streamed from a shard folder (see the module docstring)."""

    def __init__(self, directory: str | Path, sample_rate: int = 16000, shuffle: bool = True, buffer: int = 1000,
                 seed: int = 0, replicas: int = 1, rank: int = 0, require_text: bool = False):
        if not 0 <= rank < replicas:
            raise UserError(f"rank {rank} must lie in 0..{replicas - 1}")
        self.directory, self.index = Path(directory), read_index(directory)
        self.sample_rate, self.shuffle, self.buffer, self.seed = sample_rate, shuffle, max(1, buffer), seed
        self.replicas, self.rank, self.require_text = replicas, rank, require_text
        self.epoch, self.consumed, self._trainer = 0, 0, None

    def __len__(self) -> int:
        return self.index["items"] // self.replicas

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.consumed = epoch, 0

    def follow(self, trainer) -> None:
        """Take the epoch from the fit loop when iterated (as the samplers do)."""
        self._trainer = trainer

    def __getstate__(self) -> dict:  # loader workers get the epoch, not the trainer
        state = dict(self.__dict__)
        if state.pop("_trainer", None) is not None:
            from .dataset import training_epoch

            state["epoch"] = training_epoch(self._trainer)
        state["_trainer"] = None
        return state

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])

    def _shards(self) -> list[Path]:
        names = [s["name"] for s in self.index["shards"]]
        if self.shuffle:
            random.Random(self.seed * 7919 + self.epoch).shuffle(names)
        mine = names[self.rank::self.replicas] if len(names) >= self.replicas else names
        worker = get_worker_info()
        if worker is not None:
            mine = mine[worker.id::worker.num_workers]
        return [self.directory / name for name in mine]

    def _stream(self) -> Iterator[tuple[Entry, torch.Tensor]]:
        shards = self._shards()
        if len(self.index["shards"]) < self.replicas:  # fewer shards than processes: split the items instead
            items = (item for i, item in enumerate(self._items(shards)) if i % self.replicas == self.rank)
        else:
            items = self._items(shards)
        if not self.shuffle:
            yield from items
            return
        rng, pool = random.Random(f"{self.seed}/{self.epoch}/{self.rank}"), []
        for item in items:
            pool.append(item)
            if len(pool) >= self.buffer:
                yield pool.pop(rng.randrange(len(pool)))
        while pool:
            yield pool.pop(rng.randrange(len(pool)))

    def _items(self, shards: list[Path]) -> Iterator[tuple[Entry, torch.Tensor]]:
        for shard in shards:
            for key, meta, audio in _members(shard):
                yield self._decode(shard, key, meta, audio)

    def _decode(self, shard: Path, key: str, meta: dict, audio: bytes) -> tuple[Entry, torch.Tensor]:
        where = f"{shard}:{key} ({meta.get('id')})"
        if self.require_text and not (meta.get("text") or "").strip():
            raise AudioError(where, "no transcript")
        wave = torch.from_numpy(decode_audio(io.BytesIO(audio), where, self.sample_rate))
        entry = Entry(audio=f"{shard}#{key}", **{k: v for k, v in meta.items() if k in META_FIELDS})
        return entry, wave

    def __iter__(self) -> Iterator[tuple[Entry, torch.Tensor]]:
        if self._trainer is not None:
            from .dataset import training_epoch

            self.set_epoch(training_epoch(self._trainer))
        share = len(self)
        worker = get_worker_info()
        if worker is not None:  # the workers split this process's share
            share = share // worker.num_workers + (worker.id < share % worker.num_workers)
        stream, produced = self._stream(), 0
        while produced < share:  # a short share is topped up from its own start: equal steps on every rank
            for item in stream:
                if produced >= share:
                    break
                produced += 1
                if produced <= self.consumed:  # resumed: skip what this epoch already gave
                    continue
                self.consumed = produced
                yield item
            else:
                if produced == 0:
                    raise UserError(f"{self.directory}: process {self.rank} of {self.replicas} got no items")
                stream = self._stream()
        self.consumed = 0  # the epoch is complete: iterating again replays it from its start
