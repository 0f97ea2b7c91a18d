"""The book's story model: a small GPT trained on the story grammar, weights shipped with the package.

``load_story_model()`` returns ``(model, tokenizer)``: a GPT that has learned the corpus (it writes
grammatical sentences nearly always and its loss sits close to the corpus's entropy floor; chapter
08 measures both) and the byte-level BPE tokenizer it reads. The chapters that study a trained model
(08 generation, 10 looking inside, 16 deployment) study this one, so their conclusions rest on a
model that has learned, not on one trained for a few seconds.

The weights come from ``scripts/train_story_model.py`` (its seed, recipe and measured time are in
the script and in the file's ``extra``); re-running it gives a model of the same quality, not the
same bits. The file holds only tensors and plain values and loads with ``weights_only=True``.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from .checkpoint import load_model
from .tokenizers import ByteBPETokenizer

__all__ = ["STORY_MODEL_PATH", "load_story_model"]

STORY_MODEL_PATH = Path(__file__).resolve().parent / "assets" / "story_model.pt"


def load_story_model(
    path: str | os.PathLike | None = None, return_info: bool = False
) -> tuple[nn.Module, ByteBPETokenizer] | tuple[nn.Module, ByteBPETokenizer, dict]:
    """The book's trained story GPT and its tokenizer: ``model, tokenizer = load_story_model()``.

    The model is in eval mode. ``return_info=True`` also returns the training record stored with the
    weights (recipe, seed, steps, measured time, validation loss). ``path`` loads another file written
    by the training script.
    """
    path = Path(path) if path is not None else STORY_MODEL_PATH
    if not path.is_file():
        raise FileNotFoundError(
            f"the story model is missing at {path}; it ships with the package. Reinstall the package, "
            "or train it again with `python scripts/train_story_model.py`"
        )
    model, extra = load_model(path, return_extra=True)
    spec = extra.get("tokenizer") if isinstance(extra, dict) else None
    if not isinstance(spec, dict) or spec.get("type") != "ByteBPETokenizer" or "merges" not in spec:
        raise ValueError(f"{path} holds no byte-level BPE tokenizer in its extra['tokenizer']")
    tokenizer = ByteBPETokenizer([tuple(p) for p in spec["merges"]], spec["pattern"])
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(
            f"{path}: the tokenizer has {tokenizer.vocab_size} tokens, the model {model.config.vocab_size}"
        )
    model.eval()
    info = {k: v for k, v in extra.items() if k != "tokenizer"}
    return (model, tokenizer, info) if return_info else (model, tokenizer)
