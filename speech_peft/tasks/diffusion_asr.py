"""Training diffusion-decoded ASR (Whisfusion; the model and its decoding are ``models/diffusion_asr.py``).

Stage 1 trains only the cross-attention adapters (encoder and decoder frozen) with mask ratios
t ~ U(0, 1); with ``decoder_lora`` it trains LoRA on the frozen Whisper decoder instead, its cross-attention
Whisper's own and frozen too. Stage 2 (``init_from`` a stage-1 export) trains the decoder and adapters with
t ~ U(0.7, 1.0) (``mask_range`` widens it), layer-wise learning-rate decay and an exponential moving
average of the weights; validation and the export use the averaged weights (torch's
``AveragedModel`` with an EMA).

Switches beyond the paper, each measured in the fsdd_long recipe's ablation: ``shift`` keeps the
autoregressive shift of the Whisper decoder it starts from; ``antithetic`` t sampling and
``loss_weighting="inverse_t"``; ``ctc_weight > 0`` trains a character CTC head on the frozen encoder
beside the decoder, whose hypothesis gives a Mask-CTC starting canvas (``decode.init="ctc"``);
``gap_rate`` inserts empty slots (PAD) inside the training texts, so that the decoder can leave a slot
of an estimated canvas empty (a misspelt CTC word split into more tokens than the right one);
``val_wer`` decodes the validation set at every validation and logs val/wer, so the checkpoint kept
is the best decoder, not the best loss. ``state_masking`` (``StateMasking``'s fields) is SpecAugment on the
encoder states in training, which works on cached states; speed perturbation is ``data.augment``.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import ClassVar, Iterator

import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..adapters.cross_attention import adapter_memory
from ..data.datamodule import ManifestDataModule
from ..data.dataset import Batch
from ..data.manifest import read_manifest
from ..decoders import diffusion_loss, insert_gaps, mask_tokens, pack_transcripts, sample_ratio
from ..decoders.ctc import ctc_loss
from ..encoders.cache import EncoderCache
from ..encoders.state_masking import StateMasking, mask_states
from ..errors import UserError, dataclass_options
from ..metrics.text import normalize
from ..models.diffusion_asr import EXPORT_KIND, DiffusionASRModel  # noqa: F401  (the export kind)
from .asr import ASRTask, CorpusWER
from .common import keep_frozen_parts_in_eval

STAGE_RATIOS = {1: (0.0, 1.0), 2: (0.7, 1.0)}


class DiffusionASR(DiffusionASRModel, ASRTask):
    datamodule: ClassVar[type] = ManifestDataModule  # the batches it trains on

    def __init__(self, encoder_name: str = "whisper-tiny.en", stage: int = 1, max_length: int = 256,
                 xattn_heads: int | None = None, lr: float = 1e-3, weight_decay: float = 0.01, layer_decay: float = 0.9,
                 ema_decay: float = 0.995, init_from: str | None = None, cache_dir: str | None = None,
                 decode: dict | None = None, tokens_per_second: float | None = None,
                 xattn_init: str = "whisper", shift: bool = False, antithetic: bool = False,
                 loss_weighting: str = "mean", mask_range: tuple[float, float] | None = None,
                 ctc_weight: float = 0.0, ctc_width: int = 192, ctc_layers: int = 2, ctc_lr: float = 1e-3,
                 gap_rate: float = 0.0, val_wer: bool = False, decoder_lora: dict | None = None,
                 state_masking: dict | None = None, encoder_adapter: str | None = None) -> None:
        if stage not in STAGE_RATIOS:
            raise UserError(f"stage must be 1 (adapters only) or 2 (decoder + adapters), not {stage}")
        if loss_weighting not in ("mean", "inverse_t"):
            raise UserError(f"loss_weighting must be 'mean' or 'inverse_t', not {loss_weighting!r}")
        if mask_range is not None and not 0.0 <= mask_range[0] < mask_range[1] <= 1.0:
            raise UserError(f"mask_range must be (low, high) with 0 <= low < high <= 1, not {mask_range}")
        ctc = {"width": ctc_width, "layers": ctc_layers} if ctc_weight > 0 else None
        super().__init__(encoder_name, stage, max_length, xattn_heads, init_from, decode, tokens_per_second,
                         xattn_init, shift, ctc, gap_rate, decoder_lora, encoder_adapter)
        self.save_hyperparameters()
        if stage == 2:
            for p in self.decoder.parameters():
                p.requires_grad_(True)
        self.cache = EncoderCache(cache_dir, self.encoder) if cache_dir else None
        self.state_masking = (dataclass_options(StateMasking, state_masking, "task.state_masking")
                              if state_masking else None)
        # The average is not a submodule: it is no part of the model's parameters or state_dict (and
        # so of trainable counts or the checkpoint rule); checkpoints carry it under "ema".
        object.__setattr__(self, "average", None)
        self.val_wer = CorpusWER()

    # -- data ---------------------------------------------------------------------------------
    def tokens_of(self, texts: list[str | None], ids: list[str], canvas: Tensor | None = None,
                  generator: torch.Generator | None = None) -> Tensor:
        """The packed training targets; with ``gap_rate``, empty slots (PAD) inserted where the canvas
        has room."""
        missing = [i for i, t in zip(ids, texts) if t is None]
        if missing:
            raise UserError(f"no transcript for {missing[:3]}: diffusion ASR trains on transcribed audio")
        config = self.decoder.config
        lists = [self.tokenizer.encode(" " + normalize(t), add_special_tokens=False).ids for t in texts]
        sizes = [config.max_length] * len(lists) if canvas is None else canvas.tolist()
        lists = [insert_gaps(ids, self.hparams.gap_rate, size - len(config.prefix) - len(ids), config.pad_id, generator)
                 for ids, size in zip(lists, sizes)]
        return pack_transcripts(lists, config, canvas, names=ids).to(self.device)

    def memory(self, batch: Batch) -> tuple[Tensor, Tensor]:
        if self.cache is not None:
            return self.cache(batch.waveforms, batch.lengths)
        with torch.no_grad():
            out = self.encoder(batch.waveforms, batch.lengths)
        return out.hidden, out.mask

    # -- training -----------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()
        if self.hparams.stage == 1:  # the frozen decoder without dropout; only the adapters train
            keep_frozen_parts_in_eval(self.decoder, mode)
        return self

    def _loss(self, batch: Batch, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
        """The diffusion loss and, with a CTC head, its CTC loss (unweighted)."""
        hp, config = self.hparams, self.decoder.config
        canvas = self.canvas(batch.lengths)
        tokens = self.tokens_of(batch.texts, batch.ids, canvas, generator)
        low, high = hp.mask_range or STAGE_RATIOS[hp.stage]
        ratio = sample_ratio(len(batch), low, high, generator, antithetic=hp.antithetic).to(self.device)
        prefix = len(config.prefix)
        noisy, masked = mask_tokens(tokens, ratio, config.mask_id, generator, canvas, prefix=prefix)
        text_positions = (canvas if canvas is not None else torch.full((len(batch),), tokens.shape[1])) - prefix
        memory, mask = self.memory(batch)
        if self.state_masking is not None and self.training:
            memory = mask_states(memory, mask, self.state_masking, generator)
        with adapter_memory(self.decoder, memory, mask):
            loss = diffusion_loss(self.decoder(noisy, only=masked), tokens, masked, hp.loss_weighting, ratio,
                                  text_positions)
        if self.ctc is None:
            return loss, None
        return loss, ctc_loss(*self.ctc(memory, mask), [normalize(t or "") for t in batch.texts])

    def on_fit_start(self) -> None:
        """The lexicon: every word of the training manifest's transcripts (known before the first
        validation, which may already decode with it)."""
        paths = getattr(self.trainer.datamodule, "paths", {}) if self.trainer.datamodule is not None else {}
        if paths.get("train"):
            self.lexicon |= {word for entry in read_manifest(paths["train"]) for word in normalize(entry.text or "").split()}

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss, ctc = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        if ctc is not None:
            self.log("train/ctc", ctc, prog_bar=True, batch_size=len(batch))
            loss = loss + self.hparams.ctc_weight * ctc
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_wer.start()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        generator = torch.Generator().manual_seed(batch_idx)  # the same masks every epoch
        with self.averaged_weights():
            loss, ctc = self._loss(batch, generator)
            if self.hparams.val_wer:
                hidden, mask = self.memory(batch)
                self.val_wer.add(batch.texts, self.chosen_texts(self.decode_states(hidden, mask, batch.lengths)))
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch))
        if ctc is not None:
            self.log("val/ctc", ctc, batch_size=len(batch))

    def on_train_epoch_end(self) -> None:
        if self.cache is not None:  # the states of this epoch's new clips go to disk as one shard
            self.cache.flush()

    def teardown(self, stage: str) -> None:
        if self.cache is not None:
            self.cache.flush()

    def on_validation_epoch_end(self) -> None:
        if self.cache is not None:
            self.cache.flush()
        if self.hparams.val_wer and self.val_wer.refs:
            self.log("val/wer", self.val_wer.result("val")["val/wer"], prog_bar=True)

    def _new_average(self) -> AveragedModel:
        average = AveragedModel(self.decoder, multi_avg_fn=get_ema_multi_avg_fn(self.hparams.ema_decay))
        average.requires_grad_(False)
        object.__setattr__(self, "average", average)
        return average

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.hparams.stage == 2:
            (self.average or self._new_average()).update_parameters(self.decoder)

    def configure_model(self) -> None:  # strategy=fsdp: shard the layers across the processes
        if self.hparams.stage == 2 and self.device_mesh is not None:
            raise UserError("diffusion ASR stage 2 keeps a weight average of the whole decoder, which strategy=fsdp "
                             "does not shard: train stage 2 with strategy=ddp")
        super().configure_model()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lexicon"] = sorted(self.lexicon)
        if self.average is not None:  # so that a resumed stage 2 keeps averaging where it stopped
            checkpoint["ema"] = self.average.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.lexicon |= set(checkpoint.get("lexicon", []))
        if "ema" in checkpoint:
            self._new_average().load_state_dict(checkpoint["ema"], strict=True)

    @contextlib.contextmanager
    def averaged_weights(self) -> Iterator[None]:
        """The averaged weights in place of the live ones (stage 2) inside the block, restored after it."""
        if self.average is None:
            yield
            return
        live, averaged = list(self.decoder.parameters()), list(self.average.module.parameters())
        saved = [p.detach().clone() for p in live]
        with torch.no_grad():
            for p, a in zip(live, averaged):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, value in zip(live, saved):
                    p.copy_(value)

    def test_transcripts(self, batch: Batch) -> list[str]:
        with self.averaged_weights():
            return self.transcribe(batch.waveforms, batch.lengths)

    def predict_step(self, batch: Batch, batch_idx: int) -> list[dict]:
        with self.averaged_weights():
            return [{"id": uid, "text": text} for uid, text in zip(batch.ids, self.transcribe(batch.waveforms,
                                                                                               batch.lengths))]

    def configure_optimizers(self):
        hp = self.hparams
        groups: dict[float, list] = {}
        layers = len(self.decoder.layers)
        for name, p in self.decoder.named_parameters():
            if not p.requires_grad:
                continue
            depth = _layer_index(name, layers)
            scale = hp.layer_decay ** (layers - depth) if hp.stage == 2 else 1.0
            groups.setdefault(scale, []).append(p)
        params = [{"params": ps, "lr": hp.lr * scale} for scale, ps in sorted(groups.items())]
        if self.ctc is not None:  # a new head, trained from scratch at its own rate in both stages
            params.append({"params": list(self.ctc.parameters()), "lr": hp.ctc_lr})
        return torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)

    # -- export ---------------------------------------------------------------------------------
    def export(self, directory: str | Path) -> Path:
        """The model's export (``DiffusionASRModel.save``), with the averaged weights when there are any."""
        with self.averaged_weights():
            return self.save(directory)

    @classmethod
    def from_export(cls, directory: str | Path, decode: dict | None = None) -> "DiffusionASR":
        """A trained model from its export; ``decode`` overrides the decoding options it was trained with."""
        arguments = cls.export_arguments(directory)
        ctc = arguments.pop("ctc") or {}
        arguments["decode"] = {**(arguments["decode"] or {}), **(decode or {})} or None
        return cls(**arguments, ctc_weight=1.0 if ctc else 0.0, ctc_width=ctc.get("width", 192),
                   ctc_layers=ctc.get("layers", 2)).eval()


def _layer_index(name: str, layers: int) -> int:
    """Depth of a decoder parameter for layer-wise decay: embeddings 0, block i -> i + 1, the rest top."""
    if name.startswith(("embed_tokens", "embed_positions")):
        return 0
    if name.startswith("layers."):
        return int(name.split(".")[1]) + 1
    return layers
