"""Diffusion-decoded ASR (Whisfusion): frozen Whisper encoder -> cross-attention adapters -> a
masked-diffusion text decoder initialised from Whisper's decoder.

Stage 1 trains only the cross-attention adapters (encoder and decoder frozen) with mask ratios
t ~ U(0, 1). Stage 2 (``init_from`` a stage-1 export) trains the decoder and adapters with
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
is the best decoder, not the best loss.

Export: ``xattn/`` (the adapters, adapter core format), ``decoder.safetensors`` after stage 2,
``ctc.safetensors`` with a CTC head, and ``export.json``; ``DiffusionASR.from_export`` reads it
(``speech-peft transcribe --model EXPORT``).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import ClassVar, Iterator

from omegaconf import OmegaConf
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..adapters import CrossAttentionConfig, add_adapter, load_adapter, save_adapter, sites
from ..adapters.cross_attention import adapter_memory
from ..data.datamodule import ManifestDataModule
from ..data.dataset import Batch
from ..data.manifest import read_manifest
from ..decoders import (Candidates, DecodeOptions, canvas_lengths, choose, diffusion_decode, diffusion_loss, from_whisper,
                        insert_gaps, load_decoder_weights, mask_tokens, pack_transcripts, sample_ratio, text_tokens)
from ..decoders.ctc import (CTCHead, CTCHeadConfig, ctc_loss, greedy_characters, token_confidences, token_words,
                            word_confidences)
from ..encoders.cache import EncoderCache
from ..encoders.whisper import SAMPLE_RATE, load_whisper, load_whisper_encoder
from ..exports import read_export_info, write_export_info
from ..fileio import atomic_write, write_text
from ..metrics.text import normalize
from .asr import ASRTask, CorpusWER
from .common import keep_frozen_parts_in_eval

STAGE_RATIOS = {1: (0.0, 1.0), 2: (0.7, 1.0)}
EXPORT_KIND = "diffusion_asr"
LEXICON = "lexicon.txt"


class DiffusionASR(ASRTask):
    datamodule: ClassVar[type] = ManifestDataModule  # the batches it trains on

    def __init__(self, encoder_name: str = "whisper-tiny.en", stage: int = 1, max_length: int = 256,
                 xattn_heads: int | None = None, lr: float = 1e-3, weight_decay: float = 0.01, layer_decay: float = 0.9,
                 ema_decay: float = 0.995, init_from: str | None = None, cache_dir: str | None = None,
                 decode: dict | None = None, tokens_per_second: float | None = None,
                 xattn_init: str = "whisper", shift: bool = False, antithetic: bool = False,
                 loss_weighting: str = "mean", mask_range: tuple[float, float] | None = None,
                 ctc_weight: float = 0.0, ctc_width: int = 192, ctc_layers: int = 2, ctc_lr: float = 1e-3,
                 gap_rate: float = 0.0, val_wer: bool = False) -> None:
        super().__init__()
        if stage not in STAGE_RATIOS:
            raise ValueError(f"stage must be 1 (adapters only) or 2 (decoder + adapters), not {stage}")
        if xattn_init not in ("whisper", "random"):
            raise ValueError(f"xattn_init must be 'whisper' or 'random', not {xattn_init!r}")
        if loss_weighting not in ("mean", "inverse_t"):
            raise ValueError(f"loss_weighting must be 'mean' or 'inverse_t', not {loss_weighting!r}")
        if mask_range is not None and not 0.0 <= mask_range[0] < mask_range[1] <= 1.0:
            raise ValueError(f"mask_range must be (low, high) with 0 <= low < high <= 1, not {mask_range}")
        self.save_hyperparameters()
        bundle = load_whisper(encoder_name)
        if bundle.tokenizer is None:
            raise ValueError(f"{encoder_name}: a diffusion decoder needs the model's tokenizer.json")
        self.tokenizer = bundle.tokenizer
        self.encoder = load_whisper_encoder(encoder_name)
        self.decoder = from_whisper(bundle.model, max_length, shift=shift)
        self.ctc = CTCHead(CTCHeadConfig(self.encoder.dim, ctc_width, ctc_layers)) if ctc_weight > 0 else None
        if init_from is None:  # heads: the Whisper decoder's own unless given (tiny.en 6, base 8)
            heads = xattn_heads or bundle.model.config.decoder_attention_heads
            self.report = add_adapter(self.decoder, CrossAttentionConfig(memory_dim=self.encoder.dim,
                                                                         num_heads=heads), name="xattn")
            if xattn_init == "whisper":
                init_from_whisper_cross_attention(self.decoder, bundle.model)
        else:  # an export: its decoder weights where it has them (stage 2), then its adapters
            if (Path(init_from) / "decoder.safetensors").exists():
                load_decoder_weights(self.decoder, load_file(Path(init_from) / "decoder.safetensors"))
            self.report = load_adapter(self.decoder, Path(init_from) / "xattn", name="xattn")
            if self.ctc is not None and (Path(init_from) / "ctc.safetensors").exists():
                self.ctc.load_state_dict(load_file(Path(init_from) / "ctc.safetensors"), strict=True)
        if stage == 2:
            for p in self.decoder.parameters():
                p.requires_grad_(True)
        self.cache = EncoderCache(cache_dir, self.encoder) if cache_dir else None
        # The average is not a submodule: it is no part of the model's parameters or state_dict (and
        # so of trainable counts or the checkpoint rule); checkpoints carry it under "ema".
        object.__setattr__(self, "average", None)
        self.val_wer = CorpusWER()
        # Every word of the training transcripts; exported, so that Mask-CTC can re-decode a CTC word
        # that was never seen in training (most often a misspelling: "seve", "thre").
        self.lexicon: set[str] = set()
        if init_from is not None and (Path(init_from) / LEXICON).is_file():
            self.lexicon = set((Path(init_from) / LEXICON).read_text(encoding="utf-8").split())

    # -- data ---------------------------------------------------------------------------------
    def canvas(self, lengths: Tensor) -> Tensor | None:
        """Each utterance's canvas length from its samples, or None for the fixed maximum."""
        rate = self.hparams.tokens_per_second
        if rate is None:
            return None
        config = self.decoder.config
        return canvas_lengths(lengths.cpu() / SAMPLE_RATE, rate, config.max_length, len(config.prefix))

    def tokens_of(self, texts: list[str | None], ids: list[str], canvas: Tensor | None = None,
                  generator: torch.Generator | None = None) -> Tensor:
        """The packed training targets; with ``gap_rate``, empty slots (PAD) inserted where the canvas
        has room."""
        missing = [i for i, t in zip(ids, texts) if t is None]
        if missing:
            raise ValueError(f"no transcript for {missing[:3]}: diffusion ASR trains on transcribed audio")
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
            raise ValueError("diffusion ASR stage 2 keeps a weight average of the whole decoder, which strategy=fsdp "
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

    # -- export and decoding ------------------------------------------------------------------
    def export(self, directory: str | Path) -> Path:
        """``xattn/``, ``decoder.safetensors`` after stage 2 (the averaged weights when there are any),
        ``ctc.safetensors`` with a CTC head, ``lexicon.txt`` (the training words) and ``export.json``."""
        directory = Path(directory)
        with self.averaged_weights():
            save_adapter(self.decoder, directory / "xattn", name="xattn", base_model_name=self.hparams.encoder_name)
            if self.hparams.stage == 2:
                state = {k.replace(".base.", "."): v.detach().contiguous().cpu()
                         for k, v in self.decoder.state_dict().items() if ".adapters." not in k}
                atomic_write(directory / "decoder.safetensors", lambda tmp: save_file(state, tmp))
        if self.ctc is not None:
            ctc = {k: v.detach().contiguous().cpu() for k, v in self.ctc.state_dict().items()}
            atomic_write(directory / "ctc.safetensors", lambda tmp: save_file(ctc, tmp))
        if self.lexicon:
            write_text(directory / LEXICON, "".join(f"{word}\n" for word in sorted(self.lexicon)))
        hp = self.hparams
        write_export_info(directory, EXPORT_KIND, {
            "encoder_name": hp.encoder_name, "max_length": hp.max_length, "xattn_heads": hp.xattn_heads,
            "tokens_per_second": hp.tokens_per_second, "stage": hp.stage, "shift": hp.shift,
            "ctc": None if self.ctc is None else self.ctc.config.to_dict(), "decode": _plain(hp.decode),
            "gap_rate": hp.gap_rate})
        return directory

    @classmethod
    def from_export(cls, directory: str | Path, decode: dict | None = None) -> "DiffusionASR":
        """A trained model from its export; ``decode`` overrides the decoding options it was trained with."""
        config = read_export_info(directory, EXPORT_KIND)["config"]
        ctc = config.get("ctc") or {}
        decode = {**(config.get("decode") or {}), **(decode or {})} or None
        return cls(config["encoder_name"], stage=config["stage"], max_length=config["max_length"],
                   xattn_heads=config["xattn_heads"], init_from=str(directory), decode=decode,
                   tokens_per_second=config.get("tokens_per_second"), shift=config.get("shift", False),
                   ctc_weight=1.0 if ctc else 0.0, ctc_width=ctc.get("width", 192),
                   ctc_layers=ctc.get("layers", 2), gap_rate=config.get("gap_rate", 0.0)).eval()

    def candidate_texts(self, candidates: Candidates) -> list[str]:
        """Each candidate row's transcript (after the prefix, up to the first PAD), detokenised. On a
        Mask-CTC canvas each re-decoded CTC word stays one word: a second word the decoder put in its
        slots (most often a copy of the neighbour, where the CTC spelling had more tokens than the
        right word) is dropped, as a PAD there would have been."""
        config = self.decoder.config
        gaps = candidates.pad_is_gap or self.hparams.gap_rate > 0  # trained with gaps: PAD may sit inside text
        texts = []
        for index, row in enumerate(candidates.tokens):
            if candidates.words is not None:
                row = row.clone()
                started: set[int] = set()
                for position, word in enumerate(candidates.words[index].tolist()):
                    if word < 0 or row[position] == config.pad_id:
                        continue
                    if self._starts_word(int(row[position])):
                        if word in started:
                            row[position] = config.pad_id  # a gap: pad_is_gap skips it
                        started.add(word)
            texts.append(self.tokenizer.decode(text_tokens(row, config, gaps)).strip())
        return texts

    def _starts_word(self, token: int) -> bool:
        piece = self.tokenizer.id_to_token(token)
        return piece is not None and piece.startswith("Ġ")  # byte-level BPE's space

    @torch.no_grad()
    def decode_candidates(self, waves: Tensor, lengths: Tensor, options: DecodeOptions | None = None
                          ) -> list[Candidates]:
        """Encode, then decode K candidates per utterance on its canvas."""
        out = self.encoder(waves, lengths)
        return self.decode_states(out.hidden, out.mask, lengths, options)

    @torch.no_grad()
    def decode_states(self, hidden: Tensor, mask: Tensor, lengths: Tensor, options: DecodeOptions | None = None
                      ) -> list[Candidates]:
        """Decode K candidates per utterance from its encoder states (``lengths``: its samples)."""
        options = options or DecodeOptions(**(self.hparams.decode or {}))
        if options.init == "ctc":
            start, canvas, words = self.ctc_canvas(hidden, mask, options.ctc_threshold, options.mask_unknown_words)
            decoded = diffusion_decode(self.decoder, hidden, mask, options, canvas, start)
            for candidates, row in zip(decoded, words):
                candidates.words = row.expand(options.candidates, -1)
            return decoded
        return diffusion_decode(self.decoder, hidden, mask, options, self.canvas(lengths))

    def ctc_hypotheses(self, hidden: Tensor, mask: Tensor, mask_unknown_words: bool = False
                       ) -> list[tuple[list[int], list[float], list[int]]]:
        """The CTC head's best path per utterance, as BPE tokens with each token's confidence (that
        of the least confident character of its word) and word index, so a doubtful word is re-decoded whole (its
        tokens come from the CTC spelling, which may split it oddly, e.g. "eighxt" -> "eigh", "x", "t").
        ``mask_unknown_words``: a word outside the training lexicon has confidence 0. A dropped
        letter ("seve") leaves no unsure character behind; not being a known word gives it away."""
        if mask_unknown_words and not self.lexicon:
            raise ValueError("mask_unknown_words needs the training lexicon (lexicon.txt in the export)")
        if self.ctc is None:
            raise ValueError("decode.init='ctc' needs a model trained with a CTC head (ctc_weight > 0)")
        out = []
        for text, confidence in greedy_characters(*self.ctc(hidden, mask)):
            encoding = self.tokenizer.encode(" " + text, add_special_tokens=False) if text else None
            if encoding is None:
                out.append(([], [], []))
                continue
            offsets = [(max(a - 1, 0), max(b - 1, 0)) for a, b in encoding.offsets]  # into text, not " " + text
            lexicon = self.lexicon if mask_unknown_words else None
            out.append((encoding.ids, word_confidences(text, token_confidences(text, confidence, offsets), offsets,
                                                       lexicon), token_words(text, offsets)))
        return out

    def ctc_canvas(self, hidden: Tensor, mask: Tensor, threshold: float, mask_unknown_words: bool = False
                   ) -> tuple[Tensor, Tensor, Tensor]:
        """Mask-CTC starting canvases (B, L), their lengths, and for each masked position the index of
        the CTC word it re-decodes (-1 elsewhere): the prefix, the CTC tokens with those below
        ``threshold`` masked, then one PAD (end of text)."""
        config = self.decoder.config
        prefix = list(config.prefix)
        rows, spans = [], []
        for ids, confidence, words in self.ctc_hypotheses(hidden, mask, mask_unknown_words):
            doubtful = [c < threshold for c in confidence]
            ids = [config.mask_id if d else t for t, d in zip(ids, doubtful)]
            rows.append((prefix + ids)[: config.max_length - 1] + [config.pad_id])
            spans.append(([-1] * len(prefix) + [w if d else -1 for w, d in zip(words, doubtful)])[: len(rows[-1]) - 1] + [-1])
        canvas = torch.tensor([len(r) for r in rows])
        start = torch.full((len(rows), int(canvas.max())), config.pad_id, dtype=torch.long)
        words = torch.full(start.shape, -1, dtype=torch.long)
        for i, (row, span) in enumerate(zip(rows, spans)):
            start[i, : len(row)] = torch.tensor(row)
            words[i, : len(span)] = torch.tensor(span)
        return start, canvas, words

    @torch.no_grad()
    def transcribe(self, waves: Tensor, lengths: Tensor, options: DecodeOptions | None = None) -> list[str]:
        return self.chosen_texts(self.decode_candidates(waves, lengths, options), options)

    def chosen_texts(self, decoded: list[Candidates], options: DecodeOptions | None = None) -> list[str]:
        """Each utterance's transcript: its candidates combined by the decoding rule."""
        options = options or DecodeOptions(**(self.hparams.decode or {}))
        results = []
        for candidates in decoded:
            texts = self.candidate_texts(candidates)
            results.append(" ".join(choose(candidates, [t.split() for t in texts], options.rule).words))
        return results


def _plain(options) -> dict | None:
    """Decoding options as plain JSON values (a Hydra config's DictConfig as a dict)."""
    return None if options is None else OmegaConf.to_container(OmegaConf.create(dict(options)))


def _layer_index(name: str, layers: int) -> int:
    """Depth of a decoder parameter for layer-wise decay: embeddings 0, block i -> i + 1, the rest top."""
    if name.startswith(("embed_tokens", "embed_positions")):
        return 0
    if name.startswith("layers."):
        return int(name.split(".")[1]) + 1
    return layers


def init_from_whisper_cross_attention(decoder: nn.Module, whisper: nn.Module) -> None:
    """Start each block's cross-attention adapter from the same Whisper decoder layer's own
    cross-attention (its norm, q/k/v/out projections; k has no bias) with the gate open
    (tanh(3) = 0.995): the decoder then begins already knowing how to look at Whisper's audio
    states, instead of learning that from a random start."""
    source, heads = whisper.model.decoder.layers, whisper.config.decoder_attention_heads
    for name, site in sites(decoder).items():
        adapter, layer = site.adapters["xattn"], source[int(name.split(".")[1])]
        if adapter.attn.num_heads != heads:
            raise ValueError(f"xattn_heads must match the Whisper decoder's {heads} heads to start from its "
                             "cross-attention (or use xattn_init='random')")
        attn = layer.encoder_attn
        with torch.no_grad():
            adapter.norm.load_state_dict(layer.encoder_attn_layer_norm.state_dict())
            adapter.attn.in_proj_weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
            adapter.attn.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, torch.zeros_like(attn.q_proj.bias),
                                                       attn.v_proj.bias]))
            adapter.attn.out_proj.load_state_dict(attn.out_proj.state_dict())
            adapter.gate.fill_(3.0)
