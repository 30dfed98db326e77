"""The corpus recipes run end to end on stand-ins in each corpus's layout (slow), and say where to download
when the corpus is missing (fast)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from corpus_standins import commonvoice, librispeech, vctk

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
TINY_BUDGET = ["--epochs", "1", "--", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]


def _recipe(path: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", f"recipes/{path}/run.sh", *args], cwd=ROOT, env={**ENV, **env},
                          capture_output=True, text=True, timeout=1200)


@pytest.mark.parametrize("recipe, url", [("librispeech/asr", "openslr.org/12"), ("libritts/restore", "openslr.org/141"),
                                         ("vctk/restore", "datashare.ed.ac.uk"),
                                         ("commonvoice/asr", "commonvoice.mozilla.org")])
def test_a_recipe_without_its_corpus_stops_at_stage_0_and_says_where_to_download(recipe, url, tmp_path):
    done = _recipe(recipe, "--data", str(tmp_path / "absent"), "--exp", str(tmp_path / "exp"))
    assert done.returncode == 1 and url in done.stderr and "not found" in done.stderr
    assert not (tmp_path / "exp").exists()


@pytest.mark.slow
def test_librispeech_recipe_fine_tunes_lora_and_scores_frozen_and_adapted_wer(tmp_path):
    data = librispeech(tmp_path / "LibriSpeech", {"train-clean-100": 8, "dev-clean": 2, "test-clean": 4})
    exp = tmp_path / "exp"
    done = _recipe("librispeech/asr", "--data", str(data), "--exp", str(exp), *TINY_BUDGET)
    assert done.returncode == 0, done.stderr[-3000:]
    wer = dict(re.findall(r"\| (frozen|lora) \| ([0-9.]+)% \|", (exp / "RESULTS.md").read_text()))
    assert set(wer) == {"frozen", "lora"}
    assert float(wer["frozen"]) < 30  # real read sentences: Whisper tiny.en gets most words right
    assert (exp / "lora" / "export" / "adapter").is_dir()


@pytest.mark.slow
def test_vctk_restore_recipe_trains_restores_and_scores_held_out_speakers(tmp_path):
    data = vctk(tmp_path / "VCTK-Corpus-0.92", {"p225": 20, "p232": 2, "p257": 1})  # p225_020: validation
    exp = tmp_path / "exp"
    done = _recipe("vctk/restore", "--data", str(data), "--exp", str(exp), *TINY_BUDGET, TEST_ITEMS="2")
    assert done.returncode == 0, done.stderr[-3000:]
    restored = sorted(p.name for p in (exp / "bridge_cleaned" / "eval" / "restored").glob("*.wav"))
    assert restored == sorted(p.name for p in (exp / "eval" / "degraded").glob("*.wav"))
    assert len(restored) == 2 and all(name.startswith(("p232", "p257")) for name in restored)
    summary = (exp / "quality" / "summary.md").read_text()
    for condition in ("degraded", "restored"):
        assert re.search(rf"\| {condition} \| [0-9.]+ \| [0-9.]+ \|", summary), summary  # PESQ, STOI measured


@pytest.mark.slow
def test_commonvoice_recipe_trains_one_adapter_per_accent_fuses_them_and_scores_wer_per_accent(tmp_path):
    data = commonvoice(tmp_path / "cv-corpus", "en", ["England English", "Scottish English"],
                       {"train": 3, "dev": 1, "test": 2})
    exp = tmp_path / "exp"
    done = _recipe("commonvoice/asr", "--data", str(data / "en"), "--exp", str(exp), *TINY_BUDGET,
                   TASKS="2", PER_TASK="3")
    assert done.returncode == 0, done.stderr[-3000:]
    results = (exp / "RESULTS.md").read_text()
    for system in ("frozen", "mixture_adapter", "fusion"):
        assert f"## {system}" in results
    assert results.count("| england_english | 2 |") == 3 and results.count("| scottish_english | 2 |") == 3
    assert results.count("| all | 4 |") == 3
