import logging
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
logging.getLogger("transformers").setLevel(logging.ERROR)
torch.set_num_threads(2)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real recordings not found at {SHARED_DATA}")
    return SHARED_DATA


BUNDLED = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory) -> str:
    from tiny_models import save_tiny_whisper

    return save_tiny_whisper(tmp_path_factory.mktemp("tiny_whisper"))


@pytest.fixture(scope="session")
def fsdd_folds(tmp_path_factory) -> Path:
    """Manifests over a few real FSDD clips: 3 speakers, digits 0-2, takes 0-5, leave-one-speaker-out."""
    import shutil

    from speech_peft.data.prepare import prepare

    src = tmp_path_factory.mktemp("fsdd_src")
    for wav in sorted((BUNDLED / "fsdd_subset" / "recordings").glob("*.wav")):
        digit, speaker, take = wav.stem.split("_")
        if digit in "012" and speaker in ("george", "jackson", "theo") and int(take) < 6:
            shutil.copy(wav, src / wav.name)
    out = tmp_path_factory.mktemp("fsdd_manifests")
    prepare("fsdd", str(src), str(out))
    return out


DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="session")
def whisper_with_tokenizer(tiny_whisper_dir, tmp_path_factory) -> str:
    """The tiny Whisper with a word-level tokenizer over its 100 ids (the loader needs tokenizer.json)."""
    import shutil

    from tokenizers import Tokenizer, models, pre_tokenizers

    directory = tmp_path_factory.mktemp("tiny_whisper_tok")
    for f in Path(tiny_whisper_dir).iterdir():
        shutil.copy(f, directory / f.name)
    vocab = {f"<{i}>": i for i in range(100)}
    for i, word in enumerate(DIGIT_WORDS):
        del vocab[f"<{10 + i}>"]
        vocab[word] = 10 + i
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<2>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(directory / "tokenizer.json"))
    return str(directory)
