"""The book's story model: the committed weights load safely, and they have learned the corpus.

The quality thresholds are the book's promises for this model (issue: >= 98% grammatical sentences
at temperature 1, validation loss within 5% of the corpus's entropy floor). The samples and the loss
are computed in float64 with fixed seeds, so the verdict is the same on every CPU.
"""

from __future__ import annotations

import pytest
import torch

from attention_book.floor import floor_per_token
from attention_book.grammar import generate_corpus, grammatical_share
from transformer_core import GPT
from transformer_core.evaluation import nats_per_char, sample_stories, text_loss
from transformer_core.story_model import STORY_MODEL_PATH, load_story_model
from transformer_core.tokenizers import ByteBPETokenizer


@pytest.fixture(scope="module")
def story():
    model, tok, info = load_story_model(return_info=True)
    return model.double(), tok, info


def test_the_file_is_small_and_loads_without_pickled_code():
    assert STORY_MODEL_PATH.stat().st_size <= 5_000_000
    payload = torch.load(STORY_MODEL_PATH, weights_only=True)  # tensors and plain values only
    assert payload["class"] == "GPT" and "tokenizer" in payload["extra"]


def test_load_story_model_gives_a_gpt_and_its_tokenizer(story):
    model, tok, info = story
    assert isinstance(model, GPT) and isinstance(tok, ByteBPETokenizer)
    assert not model.training and tok.vocab_size == model.config.vocab_size == 803
    for key in ("recipe", "seed", "seconds", "val_nats_per_char", "grammatical_share"):
        assert key in info
    fresh, _ = load_story_model()  # a new copy each time: a reader may change it
    assert next(fresh.parameters()).dtype == torch.float32 and fresh is not model


def test_it_writes_grammatical_sentences(story):
    model, tok, _ = story
    share = grammatical_share(sample_stories(model, tok, n=128, max_new_tokens=63, seed=1))  # 63: within the context
    assert share.n >= 500
    assert share.value >= 0.98, f"the story model writes {share}"


def test_its_loss_is_within_5_percent_of_the_floor(story):
    model, tok, _ = story
    ids = torch.tensor(tok.encode(generate_corpus(seed=3, n_stories=300)))  # never trained on
    per_char = nats_per_char(text_loss(model, ids), ids, tok)
    floor = floor_per_token()
    assert floor < per_char < 1.05 * floor, f"{per_char:.4f} nats/char against the floor {floor:.4f}"
    assert text_loss(model, ids) > floor_per_token(tok)  # below the floor would be a bug


def test_missing_or_foreign_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="story model is missing"):
        load_story_model(tmp_path / "nope.pt")
    from transformer_core import GPTConfig, save_model

    path = save_model(GPT(GPTConfig(vocab_size=10, context_length=8, n_layer=1, n_head=1, d_model=8)),
                      tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="no byte-level BPE tokenizer"):
        load_story_model(path)
