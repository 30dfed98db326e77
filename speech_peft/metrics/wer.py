"""Word and character error rates: corpus-level (errors / reference words, as ESPnet and most papers
report) and the mean of per-utterance WERs (which some papers report instead), with the
ESPnet-style count table."""
from __future__ import annotations

import json
from dataclasses import dataclass

import jiwer

from ..data.manifest import read_manifest
from ..errors import UserError
from .text import NAME as NORMALISER_NAME
from .text import normalize


@dataclass
class ErrorCounts:
    sentences: int
    words: int
    correct: int
    substitutions: int
    deletions: int
    insertions: int
    sentence_errors: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions


@dataclass
class WERResult:
    wer: float                # corpus: total errors / total reference words
    cer: float
    mean_utterance_wer: float  # mean over utterances of each utterance's WER
    counts: ErrorCounts
    normaliser: str = NORMALISER_NAME

    def table(self) -> str:
        c = self.counts
        pct = lambda n: f"{100 * n / max(c.words, 1):.1f}"
        header = "| Snt | Wrd | Corr | Sub | Del | Ins | Err | S.Err |"
        row = (f"| {c.sentences} | {c.words} | {pct(c.correct)} | {pct(c.substitutions)} | {pct(c.deletions)} "
               f"| {pct(c.insertions)} | {pct(c.errors)} | {100 * c.sentence_errors / max(c.sentences, 1):.1f} |")
        return "\n".join([header, "|---|---|---|---|---|---|---|---|", row])

    def summary(self) -> str:
        return (f"normaliser: {self.normaliser}\n"
                f"corpus WER {100 * self.wer:.2f}%  CER {100 * self.cer:.2f}%  "
                f"mean-utterance WER {100 * self.mean_utterance_wer:.2f}%\n{self.table()}")


def score(references: list[str], hypotheses: list[str], normalise: bool = True) -> WERResult:
    if len(references) != len(hypotheses):
        raise UserError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        raise UserError("nothing to score: no utterances")
    refs = [normalize(r) if normalise else r for r in references]
    hyps = [normalize(h) if normalise else h for h in hypotheses]
    words = sub = dele = ins = corr = sent_err = 0
    per_utt = []
    for ref, hyp in zip(refs, hyps):
        n_ref = len(ref.split())
        if n_ref == 0:
            raise UserError(f"empty reference after normalisation (hypothesis {hyp!r}); WER is undefined")
        out = jiwer.process_words(ref, hyp)
        words += n_ref
        sub, dele, ins, corr = sub + out.substitutions, dele + out.deletions, ins + out.insertions, corr + out.hits
        errors = out.substitutions + out.deletions + out.insertions
        sent_err += errors > 0
        per_utt.append(errors / n_ref)
    chars = jiwer.process_characters(refs, hyps)
    counts = ErrorCounts(len(refs), words, corr, sub, dele, ins, sent_err)
    return WERResult(wer=counts.errors / words, cer=chars.cer, mean_utterance_wer=sum(per_utt) / len(per_utt),
                     counts=counts)


def word_errors(reference: str, hypothesis: str) -> int:
    """Substitutions + deletions + insertions between two texts after the project's normaliser."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref.split():
        return len(hyp.split())
    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions


def wer_change_interval(words: list[int], errors_before: list[int], errors_after: list[int], groups: list[str],
                        level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The ``level`` interval, in WER points, of the corpus WER change from ``errors_before`` to
    ``errors_after`` (per utterance, over ``words`` reference words each), by a paired bootstrap that
    resamples whole ``groups`` (speakers): utterances of one speaker are not independent evidence.
    An interval below 0 says the change lowered WER beyond what speaker sampling explains."""
    import numpy as np

    if not (len(words) == len(errors_before) == len(errors_after) == len(groups)) or not words:
        raise ValueError("wer_change_interval: give one count of each kind per utterance, for at least one")
    names = sorted(set(groups))
    index = {name: i for i, name in enumerate(names)}
    per_group = np.zeros((len(names), 2))  # reference words, error change
    for n, before, after, group in zip(words, errors_before, errors_after, groups):
        per_group[index[group]] += (n, after - before)
    draws = np.random.default_rng(seed).integers(0, len(names), size=(resamples, len(names)))
    totals = per_group[draws].sum(axis=1)
    change = 100 * totals[:, 1] / np.maximum(totals[:, 0], 1)
    tail = (1 - level) / 2
    low, high = np.quantile(change, [tail, 1 - tail])
    return float(low), float(high)


def _lines(path: str):
    """(number, text) of each line of a UTF-8 file; a line that is not UTF-8 is an error naming the file and line."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise UserError(f"{path}:{number}: not UTF-8 text ({err.reason} at byte {err.start} of the line); "
                                "save the file as UTF-8") from None


def read_tsv(path: str) -> dict[str, str]:
    """``id<TAB>text`` lines (an empty text keeps its tab); an id given twice or a line without a tab is an
    error naming the line."""
    entries: dict[str, str] = {}
    for number, line in _lines(path):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if "\t" not in line:
            raise UserError(f"{path}:{number}: no tab: each line is id<TAB>text (an empty text keeps its tab)")
        uid, text = line.split("\t", 1)
        if uid in entries:
            raise UserError(f"{path}:{number}: id {uid!r} appears twice")
        entries[uid] = text
    return entries


def read_references(path: str) -> dict[str, str]:
    """``id<TAB>text`` lines, or a manifest (``.jsonl``) whose entries carry ``text``."""
    if not path.endswith(".jsonl"):
        return read_tsv(path)
    entries = read_manifest(path)
    missing = [e.id for e in entries if not (e.text or "").strip()]
    if missing:
        raise UserError(f"{path}: {len(missing)} entries have no transcript, e.g. {missing[:3]}")
    return {e.id: e.text for e in entries}


def read_hypotheses(path: str) -> dict[str, str]:
    """``id<TAB>text`` lines, or the ``.jsonl`` that ``speech-peft transcribe`` writes (``id`` and ``text``)."""
    if not path.endswith(".jsonl"):
        return read_tsv(path)
    hyps: dict[str, str] = {}
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            uid, text = row["id"], row.get("text") or ""
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(f"{path}:{number}: not a transcript object with id and text ({err})") from None
        if uid in hyps:
            raise UserError(f"{path}:{number}: id {uid!r} appears twice")
        hyps[uid] = text
    return hyps


def _paired(ref_path: str, hyp_path: str) -> tuple[dict[str, str], dict[str, str], list[str]]:
    refs, hyps = read_references(ref_path), read_hypotheses(hyp_path)
    missing = sorted(set(refs) - set(hyps))
    extra = sorted(set(hyps) - set(refs))
    if missing:
        raise UserError(f"{hyp_path}: no hypothesis for {len(missing)} reference id(s), e.g. {missing[:3]}")
    if extra:
        raise UserError(f"{hyp_path}: {len(extra)} id(s) not in {ref_path}, e.g. {extra[:3]}")
    return refs, hyps, sorted(refs)


def score_files(ref_path: str, hyp_path: str) -> WERResult:
    refs, hyps, ids = _paired(ref_path, hyp_path)
    return score([refs[i] for i in ids], [hyps[i] for i in ids])


GROUP_FIELDS = ("task", "speaker", "label", "language")


def score_by(ref_path: str, hyp_path: str, by: str) -> dict[str, WERResult]:
    """``{"all": result, group: result, ...}`` by a manifest field (``GROUP_FIELDS``) of the references;
    every utterance counts in exactly one group ("(none)" where the field is empty)."""
    if by not in GROUP_FIELDS:
        raise UserError(f"cannot group by {by!r}: {', '.join(GROUP_FIELDS)}")
    if not ref_path.endswith(".jsonl"):
        raise UserError(f"{ref_path}: grouping by {by} needs a .jsonl manifest as references")
    refs, hyps, ids = _paired(ref_path, hyp_path)
    group_of = {e.id: getattr(e, by) or "(none)" for e in read_manifest(ref_path)}
    results = {"all": score([refs[i] for i in ids], [hyps[i] for i in ids])}
    for group in sorted(set(group_of.values())):
        members = [i for i in ids if group_of[i] == group]
        results[group] = score([refs[i] for i in members], [hyps[i] for i in members])
    return results


def group_table(results: dict[str, WERResult], by: str) -> str:
    rows = [f"| {by} | utterances | words | WER % | CER % |", "|---|---|---|---|---|"]
    rows += [f"| {group} | {r.counts.sentences} | {r.counts.words} | {100 * r.wer:.2f} | {100 * r.cer:.2f} |"
             for group, r in results.items()]
    return "\n".join(rows)
