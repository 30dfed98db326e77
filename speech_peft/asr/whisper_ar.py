"""Autoregressive Whisper decoding, batched: a lean greedy loop (preallocated KV cache, cross-attention keys
and values computed once, one call per token) with Whisper's no-speech probability, average log-probability
and temperature fallback, and beam search."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..adapters.mixed_batch import select_rows
from ..adapters.site import sites
from ..encoders.whisper import WhisperBundle, log_mel, run_encoder
from ..encoders.whisper_model import DecoderCache
from ..errors import UserError

from .hypothesis import Hypothesis, Thresholds, fall_back
from .specials import MULTILINGUAL_VOCAB, WhisperSpecials


def prompt_for(vocab_size: int) -> list[int]:
    """Whisper's English transcription prompt without timestamps, in the standard numbering (where no
    tokenizer is at hand): English-only models (51864 ids) take <|startoftranscript|><|notimestamps|>;
    multilingual ones, whose specials sit one id later, add <|en|><|transcribe|>."""
    if vocab_size < MULTILINGUAL_VOCAB:
        return [50257, 50362]
    return [50258, 50259, 50359, 50363]


class WhisperTranscriber:
    """Transcribe 16 kHz waveforms (at most 30 s each) with a (possibly adapted) Whisper model.

    ``language``: a code (``en``, ``de``, ...) puts its token in every prompt; ``auto`` detects each
    utterance's language first, as Whisper does (the most likely language token after
    <|startoftranscript|>). English-only models take English only."""

    def __init__(self, bundle: WhisperBundle, max_new_tokens: int = 224, pad_to_30s: bool = True,
                 thresholds: Thresholds = Thresholds(), fallback: bool = True, compute_type: str = "float32",
                 language: str = "en"):
        if bundle.tokenizer is None:
            raise FileNotFoundError(f"{bundle.name}: tokenizer.json is missing; it is needed to write text")
        self.bundle = bundle
        self.model = bundle.model
        self.max_new_tokens = max_new_tokens
        self.pad_to_30s = pad_to_30s
        self.thresholds, self.fallback = thresholds, fallback
        vocab = self.model.config.vocab_size
        self.specials = WhisperSpecials.from_tokenizer(bundle.tokenizer, vocab)
        self.eot = self.specials.eot
        if language != "auto":
            self.specials.prompt(language)  # an unknown language, or one an English-only model lacks, fails here
        self.language = language
        # Specials and timestamps (every id after end-of-text) never appear inside a transcript.
        self.suppress = torch.tensor(sorted(set(bundle.suppress_tokens) | set(range(self.eot + 1, vocab))))
        self.begin_suppress = torch.tensor(bundle.begin_suppress_tokens)
        self.prompt = self.specials.prompt(None if language == "auto" else language)
        if compute_type not in ("float32", "int8"):
            raise UserError(f"compute type {compute_type!r}: choose float32 or int8")
        self.compute_type = compute_type
        # The vocabulary projection (51864 x d) is most of a CPU decoding step's time: int8 quarters the
        # bytes it reads per token. With int8 the decoder's plain linear layers run in int8 too; a layer an
        # adapter sits on, and the adapter, stay in float32.
        self.vocabulary = _int8_linear(self.model.proj_out) if compute_type == "int8" else self.model.proj_out
        self.int8 = {id(m): _int8_linear(m) for m in _step_linears(self.model.model.decoder)
                     if type(m) is nn.Linear} if compute_type == "int8" else {}
        self.no_speech = self.specials.no_speech

    def check_languages(self, codes: list[str]) -> None:
        """Before any audio is read: every language utterances name must be one the model can be prompted in."""
        for code in codes:
            try:
                self.specials.prompt(code)
            except ValueError as err:
                raise UserError(f"an utterance's language field: {err}") from None

    @torch.no_grad()
    def encode(self, waveforms: Tensor) -> Tensor:
        feats = log_mel(waveforms.to(self.model.device), self.model.config.num_mel_bins, pad_to_30s=self.pad_to_30s)
        return run_encoder(self.model.model.encoder, feats)[0]

    def _logits(self, step_ids: Tensor, encoder_states: Tensor, cache: DecoderCache, first: bool) -> Tensor:
        logits = self.model(step_ids, encoder_states=encoder_states, cache=cache)[:, -1].float().cpu()
        logits[:, self.suppress] = float("-inf")  # the search itself runs on the CPU
        if first:
            logits[:, self.begin_suppress] = float("-inf")
        return logits

    def lean_ok(self) -> bool:
        """The lean loop calls the decoder's linear layers itself: adapters on them (LoRA and the like)
        still run, but an adapter wrapping a whole block would be skipped, so such models take the
        model's own forward instead."""
        return all(isinstance(site.base, nn.Linear) for site in sites(self.model.model.decoder).values())

    @torch.no_grad()
    def greedy(self, waveforms: Tensor | None, states: Tensor | None = None) -> list[list[int]]:
        """Greedy token ids per utterance; ``states``: its encoder states when already computed."""
        states = self.encode(waveforms) if states is None else states
        return self._search(states)[0]

    @torch.no_grad()
    def decode(self, waveforms: Tensor, beam_size: int = 1, seed: int = 0,
               languages: list[str | None] | None = None) -> list[Hypothesis]:
        """One hypothesis per waveform, scored; with ``fallback`` a greedy result that loops or is unlikely
        (and is not silence) is re-decoded by sampling at rising temperatures, as Whisper does.
        ``languages``: each utterance's language where known (None: the transcriber's choice)."""
        if beam_size > 1:
            return [Hypothesis(self.decode_text(r)) for r in self.beam_search(waveforms, beam_size, languages)]
        states = self.encode(waveforms)
        languages = self.languages(states, languages)
        tokens, scores, no_speech = self._search(states, languages=languages)
        hyps = [Hypothesis(self.decode_text(t), p, s, language=code)
                for t, s, p, code in zip(tokens, scores, no_speech, languages)]
        if not self.fallback:
            return hyps

        def redecode(rows: list[int], temperature: float) -> list[Hypothesis]:
            with select_rows(self.model, rows):  # per-utterance routing follows the rows re-decoded
                again, again_scores, _ = self._search(states[rows], temperature, seed, [languages[i] for i in rows])
            return [Hypothesis(self.decode_text(t), no_speech[i], s, temperature, languages[i])
                    for i, t, s in zip(rows, again, again_scores)]

        return fall_back(hyps, self.thresholds, redecode)

    @torch.no_grad()
    def detect_language(self, states: Tensor) -> list[dict[str, float]]:
        """Per utterance, the probability of each language (a multilingual model's language tokens after
        <|startoftranscript|>), most likely first."""
        if not self.specials.multilingual:
            return [{"en": 1.0} for _ in range(states.shape[0])]
        start = torch.full((states.shape[0], 1), self.specials.sot, device=states.device)
        logits = self.model(start, encoder_states=states)[:, -1].float().cpu()
        codes = list(self.specials.languages)
        probs = logits[:, list(self.specials.languages.values())].softmax(-1)
        return [dict(sorted(zip(codes, row.tolist()), key=lambda item: -item[1])) for row in probs]

    def languages(self, states: Tensor, known: list[str | None] | None = None) -> list[str]:
        """The language each utterance is transcribed in: ``known``'s where given, else the one asked for, or
        else the detected one."""
        known = list(known or [None] * states.shape[0])
        if self.language == "auto" and None in known:
            detected = [next(iter(found)) for found in self.detect_language(states)]
        else:
            detected = [self.language] * states.shape[0]
        return [k or d for k, d in zip(known, detected)]

    def _search(self, states: Tensor, temperature: float = 0.0, seed: int = 0, languages: list[str] | None = None):
        """Token ids, average log-probabilities and no-speech probabilities, one per row of ``states``.
        Sampling draws from one generator per row, so a row's text does not depend on its batch."""
        step = self._lean_steps(states) if self.lean_ok() else self._model_steps(states)
        batch = states.shape[0]
        end = self.eot
        rows = torch.full((batch, self.max_new_tokens), end, dtype=torch.long)
        logprob = torch.zeros(batch)
        length = torch.zeros(batch)
        done = torch.zeros(batch, dtype=torch.bool)
        prompts = [self.specials.prompt(code) for code in languages] if languages else [self.prompt] * batch
        ids = torch.tensor(prompts, device=states.device)
        no_speech = None
        generators = [torch.Generator().manual_seed(seed) for _ in range(batch)] if temperature > 0 else []
        for position in range(self.max_new_tokens):
            logits, first_logits = step(ids)
            if no_speech is None:
                no_speech = first_logits.float().cpu().softmax(-1)[:, self.no_speech]
            logits = logits.float().cpu()
            logits[:, self.suppress] = float("-inf")
            if position == 0:
                logits[:, self.begin_suppress] = float("-inf")
            if temperature > 0:
                probs = (logits / temperature).softmax(-1)
                nxt = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators)])
            else:
                nxt = logits.argmax(-1)
            nxt[done] = end
            picked = logits.log_softmax(-1).gather(1, nxt[:, None]).squeeze(1)
            logprob += torch.where(done, torch.zeros_like(picked), picked)
            length += (~done).float()
            rows[:, position] = nxt
            done |= nxt == end
            if done.all():
                break
            ids = nxt[:, None].to(states.device)
        tokens = [row[: _until(row, end)].tolist() for row in rows]
        return tokens, (logprob / length.clamp(min=1)).tolist(), no_speech.tolist()

    def _model_steps(self, states: Tensor):
        cache = self.model.new_cache()

        def step(ids: Tensor) -> tuple[Tensor, Tensor]:
            logits = self.model(ids, encoder_states=states, cache=cache)
            return logits[:, -1], logits[:, 0]

        return step

    def _lean_steps(self, states: Tensor):
        """One decoder step per call on a preallocated self-attention cache; the cross-attention keys and
        values of every layer are computed once from the encoder states."""
        decoder = self.model.model.decoder
        batch, heads = states.shape[0], decoder.layers[0].self_attn.num_heads
        width = states.shape[-1] // heads
        split = lambda x: x.view(batch, -1, heads, width).transpose(1, 2)  # noqa: E731
        cross = [(split(layer.encoder_attn.k_proj(states)), split(layer.encoder_attn.v_proj(states)))
                 for layer in decoder.layers]
        room = len(self.prompt) + self.max_new_tokens
        keys = states.new_zeros(len(decoder.layers), batch, heads, room, width)
        values = torch.zeros_like(keys)
        filled = 0
        run = lambda module, x: self.int8.get(id(module), module)(x)  # noqa: E731

        def step(ids: Tensor) -> tuple[Tensor, Tensor]:
            nonlocal filled
            n = ids.shape[1]
            x = decoder.embed_tokens(ids) + decoder.embed_positions.weight[filled:filled + n]
            for i, layer in enumerate(decoder.layers):
                attn, cross_attn = layer.self_attn, layer.encoder_attn
                h = layer.self_attn_layer_norm(x)
                keys[i, :, :, filled:filled + n] = split(run(attn.k_proj, h))
                values[i, :, :, filled:filled + n] = split(run(attn.v_proj, h))
                out = F.scaled_dot_product_attention(split(run(attn.q_proj, h)), keys[i, :, :, :filled + n],
                                                     values[i, :, :, :filled + n], is_causal=n > 1)
                x = x + run(attn.out_proj, out.transpose(1, 2).reshape(batch, n, -1))
                h = layer.encoder_attn_layer_norm(x)
                out = F.scaled_dot_product_attention(split(run(cross_attn.q_proj, h)), *cross[i])
                x = x + run(cross_attn.out_proj, out.transpose(1, 2).reshape(batch, n, -1))
                x = x + run(layer.fc2, layer.activation_fn(run(layer.fc1, layer.final_layer_norm(x))))
            first = filled == 0
            filled += n
            if first:  # the no-speech probability is read after <|startoftranscript|>, once
                logits = self.vocabulary(decoder.layer_norm(x[:, [0, -1]]))
                return logits[:, 1], logits[:, 0]
            return self.vocabulary(decoder.layer_norm(x[:, -1])), None

        return step

    @torch.no_grad()
    def beam_search(self, waveforms: Tensor, beam_size: int = 5, languages: list[str | None] | None = None) -> list[list[int]]:
        states = self.encode(waveforms)
        batch = states.shape[0]
        end = self.eot
        prompts = [self.specials.prompt(code) for code in self.languages(states, languages)]
        states = states.repeat_interleave(beam_size, 0)
        seqs = [[[] for _ in range(beam_size)] for _ in range(batch)]
        scores = torch.zeros(batch, beam_size)
        scores[:, 1:] = float("-inf")  # all beams start identical: expand from the first only
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
        ids = torch.tensor([p for p in prompts for _ in range(beam_size)], device=states.device)
        cache = self.model.new_cache()
        for step in range(self.max_new_tokens):
            logits = self._logits(ids, states, cache, first=step == 0)
            logp = logits.log_softmax(-1).view(batch, beam_size, -1)
            total = (scores[..., None] + logp).view(batch, -1)
            top_scores, top_idx = total.topk(2 * beam_size, dim=-1)
            vocab = logp.shape[-1]
            new_scores = torch.full((batch, beam_size), float("-inf"))
            new_ids = torch.full((batch, beam_size), end, dtype=torch.long)
            reorder = torch.arange(batch * beam_size).view(batch, beam_size).clone()
            new_seqs = [[[] for _ in range(beam_size)] for _ in range(batch)]
            for b in range(batch):
                kept = 0
                for s, i in zip(top_scores[b].tolist(), top_idx[b].tolist()):
                    beam, token = divmod(i, vocab)
                    if s == float("-inf"):
                        break
                    if token == end:
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
            cache.reorder(reorder.view(-1).to(states.device))
            ids = new_ids.view(-1, 1).to(states.device)
        results = []
        for b in range(batch):
            pool = finished[b] or [(scores[b, k].item() / max(len(seqs[b][k]), 1), seqs[b][k]) for k in range(beam_size)]
            results.append(max(pool, key=lambda item: item[0])[1])
        return results

    def decode_text(self, tokens: list[int]) -> str:
        return self.bundle.tokenizer.decode([t for t in tokens if t < self.eot], skip_special_tokens=True).strip()

    def transcribe(self, waveforms: Tensor, beam_size: int = 1, languages: list[str | None] | None = None) -> list[str]:
        return [h.text for h in self.decode(waveforms, beam_size, languages=languages)]


def _step_linears(decoder: nn.Module) -> list[nn.Module]:
    """The linear layers a decoding step runs (the cross-attention keys and values are computed once)."""
    return [m for layer in decoder.layers for m in (
        layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.self_attn.out_proj,
        layer.encoder_attn.q_proj, layer.encoder_attn.out_proj, layer.fc1, layer.fc2)]


def _int8_linear(linear: nn.Linear) -> nn.Module:
    import warnings

    with warnings.catch_warnings():  # torch points eager quantisation users to torchao; this use is a single layer
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(nn.Sequential(linear), {nn.Linear}, dtype=torch.qint8)[0]


def _until(row: Tensor, eot: int) -> int:
    hits = (row == eot).nonzero()
    return int(hits[0]) if len(hits) else len(row)

