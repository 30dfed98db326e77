"""Autoregressive Whisper decoding (greedy and beam search) with a KV cache, batched."""
from __future__ import annotations

import torch
from torch import Tensor

from ..encoders.whisper import WhisperBundle, log_mel, run_encoder

SOT, EOT, NO_TIMESTAMPS = 50257, 50256, 50362


def prompt_for(vocab_size: int) -> list[int]:
    """Whisper's English transcription prompt without timestamps: English-only models (51864 ids)
    take <|startoftranscript|><|notimestamps|>; multilingual ones add <|en|><|transcribe|>."""
    return [SOT, NO_TIMESTAMPS] if vocab_size == 51864 else [SOT, 50259, 50359, 50363]


class WhisperTranscriber:
    """Transcribe 16 kHz waveforms with a (possibly adapted) Whisper model, English-only prompt."""

    def __init__(self, bundle: WhisperBundle, max_new_tokens: int = 224, pad_to_30s: bool = True):
        if bundle.tokenizer is None:
            raise FileNotFoundError(f"{bundle.name}: tokenizer.json is missing; it is needed to write text")
        self.bundle = bundle
        self.model = bundle.model
        self.max_new_tokens = max_new_tokens
        self.pad_to_30s = pad_to_30s
        vocab = self.model.config.vocab_size
        # Specials and timestamps (every id after end-of-text) never appear inside a transcript.
        self.suppress = torch.tensor(sorted(set(bundle.suppress_tokens) | set(range(EOT + 1, vocab))))
        self.begin_suppress = torch.tensor(bundle.begin_suppress_tokens)
        self.prompt = prompt_for(vocab)

    @torch.no_grad()
    def encode(self, waveforms: Tensor) -> Tensor:
        feats = log_mel(waveforms.to(self.model.device), self.model.config.num_mel_bins, pad_to_30s=self.pad_to_30s)
        return run_encoder(self.model.model.encoder, feats)[0]

    def _logits(self, step_ids: Tensor, encoder_states: Tensor, cache, first: bool):
        out = self.model(encoder_outputs=(encoder_states,), decoder_input_ids=step_ids,
                         cache=cache, use_cache=True)
        logits = out.logits[:, -1].float().cpu()  # the search itself runs on the CPU
        logits[:, self.suppress] = float("-inf")
        if first:
            logits[:, self.begin_suppress] = float("-inf")
        return logits, out.past_key_values

    @torch.no_grad()
    def greedy(self, waveforms: Tensor, states: Tensor | None = None) -> list[list[int]]:
        """Greedy token ids per utterance; ``states``: its encoder states when already computed."""
        states = self.encode(waveforms) if states is None else states
        batch = states.shape[0]
        ids = torch.tensor([self.prompt] * batch, device=states.device)
        tokens = torch.empty(batch, 0, dtype=torch.long)
        done = torch.zeros(batch, dtype=torch.bool)
        cache = None
        for step in range(self.max_new_tokens):
            logits, cache = self._logits(ids, states, cache, first=step == 0)
            nxt = logits.argmax(-1)
            nxt[done] = EOT
            tokens = torch.cat([tokens, nxt[:, None]], 1)
            done |= nxt == EOT
            if done.all():
                break
            ids = nxt[:, None].to(states.device)
        return [[t for t in row.tolist() if t != EOT][: _until_eot(row)] for row in tokens]

    @torch.no_grad()
    def beam_search(self, waveforms: Tensor, beam_size: int = 5) -> list[list[int]]:
        states = self.encode(waveforms)
        batch = states.shape[0]
        states = states.repeat_interleave(beam_size, 0)
        seqs = [[[] for _ in range(beam_size)] for _ in range(batch)]
        scores = torch.zeros(batch, beam_size)
        scores[:, 1:] = float("-inf")  # all beams start identical: expand from the first only
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
        ids = torch.tensor([self.prompt] * batch * beam_size, device=states.device)
        cache = None
        for step in range(self.max_new_tokens):
            logits, cache = self._logits(ids, states, cache, first=step == 0)
            logp = logits.log_softmax(-1).view(batch, beam_size, -1)
            total = (scores[..., None] + logp).view(batch, -1)
            top_scores, top_idx = total.topk(2 * beam_size, dim=-1)
            vocab = logp.shape[-1]
            new_scores = torch.full((batch, beam_size), float("-inf"))
            new_ids = torch.full((batch, beam_size), EOT, dtype=torch.long)
            reorder = torch.arange(batch * beam_size).view(batch, beam_size).clone()
            new_seqs = [[[] for _ in range(beam_size)] for _ in range(batch)]
            for b in range(batch):
                kept = 0
                for s, i in zip(top_scores[b].tolist(), top_idx[b].tolist()):
                    beam, token = divmod(i, vocab)
                    if s == float("-inf"):
                        break
                    if token == EOT:
                        if len(finished[b]) < beam_size:
                            finished[b].append((s / (len(seqs[b][beam]) + 1), seqs[b][beam]))
                        continue
                    if kept < beam_size:
                        new_scores[b, kept], new_ids[b, kept] = s, token
                        reorder[b, kept] = b * beam_size + beam
                        new_seqs[b][kept] = seqs[b][beam] + [token]
                        kept += 1
            for b in range(batch):
                if len(finished[b]) >= beam_size:
                    new_scores[b] = float("-inf")
            scores, seqs = new_scores, new_seqs
            if torch.isinf(scores).all():
                break
            cache.reorder_cache(reorder.view(-1).to(states.device))
            ids = new_ids.view(-1, 1).to(states.device)
        results = []
        for b in range(batch):
            pool = finished[b] or [(scores[b, k].item() / max(len(seqs[b][k]), 1), seqs[b][k]) for k in range(beam_size)]
            results.append(max(pool, key=lambda item: item[0])[1])
        return results

    def decode_text(self, tokens: list[int]) -> str:
        return self.bundle.tokenizer.decode([t for t in tokens if t < EOT], skip_special_tokens=True).strip()

    def transcribe(self, waveforms: Tensor, beam_size: int = 1) -> list[str]:
        rows = self.greedy(waveforms) if beam_size <= 1 else self.beam_search(waveforms, beam_size)
        return [self.decode_text(r) for r in rows]


def _until_eot(row: Tensor) -> int:
    hits = (row == EOT).nonzero()
    return int(hits[0]) if len(hits) else len(row)

