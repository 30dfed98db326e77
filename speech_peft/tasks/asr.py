"""Speech recognition tasks for ``speech-peft fit|test``: ``ASRTask`` scores the test split by corpus WER
with the project's one text normaliser; ``WhisperARFineTune`` trains ``models.whisper_ar.WhisperAR`` (an
adapter, or ``adapter.method: full``) by teacher forcing, the baseline the diffusion and fusion tasks are
compared with. Its export is the model's (``WhisperAR.save``)."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from torch.nn import functional as F

from ..asr.whisper_ar import WhisperTranscriber
from ..data.datamodule import ManifestDataModule
from ..data.dataset import Batch
from ..encoders.cache import EncoderCache
from ..encoders.whisper import WhisperEncoderModel, log_mel
from ..errors import UserError
from ..metrics.text import normalize
from ..metrics.wer import score
from ..models.whisper_ar import EXPORT_KIND, WhisperAR  # noqa: F401  (the export kind)
from .base import AdapterTask
from .common import keep_frozen_parts_in_eval


class CorpusWER:
    """Test-time bookkeeping shared by the ASR modules: hypotheses per batch, corpus WER at the end."""

    def start(self) -> None:
        self.refs: list[str] = []
        self.hyps: list[str] = []

    def add(self, refs: list[str | None], hyps: list[str]) -> None:
        self.refs += [r or "" for r in refs]
        self.hyps += hyps

    def result(self, split: str = "test") -> dict[str, float]:
        s = score(self.refs, self.hyps)
        return {f"{split}/wer": s.wer, f"{split}/cer": s.cer}


class ASRTask(AdapterTask):
    """A task that transcribes: its test split is scored by the corpus WER and CER of ``test_transcripts``."""

    def __init__(self) -> None:
        super().__init__()
        self.wer = CorpusWER()

    def test_transcripts(self, batch: Batch) -> list[str]:
        raise NotImplementedError

    def on_test_epoch_start(self) -> None:
        self.wer.start()

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.wer.add(batch.texts, self.test_transcripts(batch))

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.wer.result())


def teacher_forced_loss(model: torch.nn.Module, transcriber: WhisperTranscriber, batch: Batch,
                        encoder_states: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of the normalised transcripts (and end-of-text) after the transcriber's prompt, in each
    utterance's language where the manifest gives it. A multilingual model also learns to predict the language
    token after <|startoftranscript|>, as Whisper was trained: its language detection follows the adapter.
    ``encoder_states``: the frozen encoder's output for the batch, if already at hand (a cache)."""
    tokenizer, end = transcriber.bundle.tokenizer, transcriber.eot
    device = batch.waveforms.device
    languages = batch.languages or [None] * len(batch)
    prompts = [transcriber.specials.prompt(code) if code else transcriber.prompt for code in languages]
    rows = [prompt + tokenizer.encode(" " + normalize(t or ""), add_special_tokens=False).ids + [end]
            for prompt, t in zip(prompts, batch.texts)]
    prompt = prompts[0]  # every prompt of a model has the same length
    longest = max(map(len, rows))
    ids = torch.full((len(rows), longest), end, dtype=torch.long, device=device)
    targets = torch.full_like(ids, -100)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        targets[i, len(prompt) - 1: len(row) - 1] = torch.tensor(row[len(prompt):])  # predict text + EOT
        if transcriber.specials.multilingual:
            targets[i, 0] = row[1]  # the language token
    if encoder_states is not None:
        logits = model(ids, encoder_states=encoder_states)
    else:
        feats = log_mel(batch.waveforms, model.config.num_mel_bins, pad_to_30s=True)
        logits = model(ids, input_features=feats)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)


class WhisperARFineTune(WhisperAR, ASRTask):
    """Whisper with an adapter (LoRA by default) trained by teacher forcing on normalised transcripts."""

    datamodule: ClassVar[type] = ManifestDataModule  # the batches it trains on

    def __init__(self, model_name: str = "whisper-tiny.en", adapter: dict | None = None, lr: float = 1e-3,
                 weight_decay: float = 0.0, adapter_dir: str | None = None, language: str = "en",
                 cache_dir: str | None = None) -> None:
        """``adapter_dir``: a saved adapter to place (and go on training) instead of a new one. ``language``:
        the prompt's language for utterances whose manifest entry names none (``auto``: detected), e.g. the
        one language a per-language adapter is trained for. ``cache_dir``: keep the frozen encoder's states
        of every clip there (``EncoderCache``), so that epochs after the first run the decoder only; for
        adapters on the decoder alone."""
        super().__init__(model_name, adapter, adapter_dir, language)
        self.save_hyperparameters()
        self.cache = None
        if cache_dir is not None:
            encoder = self.model.model.encoder
            if any(p.requires_grad for p in encoder.parameters()):  # full fine-tuning included
                raise UserError("cache_dir keeps the encoder's states, but this adapter trains the encoder: "
                                 "place it on the decoder only (adapter.stack='*decoder*') or drop cache_dir")
            self.cache = EncoderCache(cache_dir, WhisperEncoderModel(encoder, pad_to_30s=True, name=model_name))

    def train(self, mode: bool = True):
        super().train(mode)
        keep_frozen_parts_in_eval(self.model, mode)
        return self

    def training_loss(self, batch: Batch) -> torch.Tensor:
        states = self.cache(batch.waveforms, batch.lengths)[0] if self.cache is not None else None
        return teacher_forced_loss(self.model, self.transcriber, batch, states)

    def on_train_epoch_end(self) -> None:
        if self.cache is not None:  # this epoch's new states go to disk as one shard
            self.cache.flush()

    def on_validation_epoch_end(self) -> None:
        if self.cache is not None:
            self.cache.flush()

    def teardown(self, stage: str) -> None:
        if self.cache is not None:
            self.cache.flush()

    def test_transcripts(self, batch: Batch) -> list[str]:
        return self.transcriber.transcribe(batch.waveforms, languages=batch.languages)

    def predict_step(self, batch: Batch, batch_idx: int) -> list[dict]:
        return [{"id": uid, "text": text} for uid, text in zip(batch.ids, self.transcribe(batch.waveforms))]

    def configure_optimizers(self):
        return torch.optim.AdamW(self.adapter_optimizer_groups(self.hparams.lr, self.hparams.weight_decay))

    def export(self, directory: str | Path) -> Path:
        return self.save(directory)

    @classmethod
    def from_export(cls, directory: str | Path) -> "WhisperARFineTune":
        return cls.load(directory)
