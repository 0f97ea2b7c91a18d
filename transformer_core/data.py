"""Data for the book: the tiny story corpus, a reader's own text, batches, and synthetic tasks.

Everything here is offline: the corpus ships with the package (``transformer_core/assets/``), the
synthetic tasks are generated on the fly, and nothing is ever downloaded.

* text: :func:`load_corpus`, :func:`load_text`;
* language-model batches: :func:`train_val_split`, :func:`get_batch`, :class:`TokenDataset`;
* encoder-decoder tasks: :func:`copy_task`, :func:`reverse_task`, :func:`sort_task`,
  :func:`addition_task`, decoded with :data:`SYNTHETIC_VOCAB` (a
  :class:`~transformer_core.tokenizers.SyntheticVocab`, kept in :mod:`transformer_core.tokenizers`);
* interpretability: :func:`repeated_random_sequences`, where induction heads appear.

Shapes use B for the batch size and T for the context length (tokens per sequence).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .tokenizers import SYNTHETIC_VOCAB, SyntheticVocab
from .validation import check_int

# The corpus ships with the package; the grammar that wrote it is the book's
# (``attention_book.grammar``: ``python -m attention_book.grammar`` regenerates it).
CORPUS_PATH = Path(__file__).resolve().parent / "assets" / "tiny_stories.txt"

__all__ = [
    "CORPUS_PATH",
    "SYNTHETIC_TASKS",
    "SYNTHETIC_VOCAB",
    "SyntheticVocab",
    "TokenDataset",
    "addition_task",
    "copy_task",
    "get_batch",
    "load_corpus",
    "load_text",
    "repeated_random_sequences",
    "reverse_task",
    "sort_task",
    "train_val_split",
]


# ---------------------------------------------------------------------- text
@lru_cache(maxsize=1)
def load_corpus() -> str:
    """The book's tiny story corpus, as one string (about 450 KB, 2,800 stories, 29 characters).

    Stories are one line each, separated by a blank line. The text comes from the book's story
    grammar (``attention_book.grammar``), which can also score what a model trained on it writes.
    """
    if not CORPUS_PATH.is_file():
        raise FileNotFoundError(
            f"the tiny corpus is missing at {CORPUS_PATH}; it ships with the package as package "
            "data. Reinstall the package (the book's `python -m attention_book.grammar` regenerates it)."
        )
    return CORPUS_PATH.read_text(encoding="utf-8")


def load_text(path: str | Path, encoding: str = "utf-8") -> str:
    """Read a plain-text file of your own to train on, with errors that say what to do.

    Line endings become "\\n" and a leading byte-order mark is dropped, so a file saved on Windows
    gives the same characters (and the same character vocabulary) as one saved elsewhere.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(
            f"no file at {str(p)!r} (looked for {p.resolve()}); a relative path starts from the "
            f"current folder, {Path.cwd()}"
        )
    if p.is_dir():
        raise IsADirectoryError(f"{p} is a folder; give the path of a text file inside it")
    raw = p.read_bytes()
    if not raw:
        raise ValueError(f"{p} is empty: there is nothing to train on")
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{p} is not valid {encoding} text: the byte {raw[e.start]:#04x} at offset {e.start} "
            f"cannot be decoded. If the file uses another encoding, say which: "
            f"load_text(path, encoding='latin-1'); if it is not plain text (PDF, Word, zip), "
            f"convert it to .txt first."
        ) from e
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise ValueError(f"{p} holds only whitespace: there is nothing to train on")
    return text


# ---------------------------------------------------------------------- language-model batches
def _as_token_tensor(data: Any, name: str = "data") -> Tensor:
    """A 1-D int64 tensor of token ids from a list or tensor, or a clear error."""
    if isinstance(data, str):
        raise TypeError(
            f"{name} is text; encode it first, e.g. torch.tensor(tokenizer.encode(text))"
        )
    if not isinstance(data, Tensor):
        data = list(data)
        if not data:
            raise ValueError(f"{name} is empty: there are no tokens")
        data = torch.as_tensor(data)
    if data.is_floating_point() or data.is_complex() or data.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, got {data.dtype}")
    if data.dim() != 1:
        raise ValueError(
            f"{name} must be one long 1-D sequence of token ids, got shape {tuple(data.shape)}; "
            f"concatenate the documents first (or flatten with {name}.flatten())"
        )
    if data.numel() == 0:
        raise ValueError(f"{name} is empty: there are no tokens")
    return data.long()


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        check_int(name, value)


def train_val_split(
    tokens: Sequence[int] | Tensor, val_fraction: float = 0.1
) -> tuple[Tensor, Tensor]:
    """Split a token sequence into (train, val) 1-D int64 tensors: the first part, then the last.

    The split is one cut, not a shuffle: windows that straddled a shuffled boundary would let the
    model see validation text during training, and the validation loss would flatter it.
    """
    data = _as_token_tensor(tokens, "tokens")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}")
    n = len(data)
    if n < 2:
        raise ValueError("cannot split 1 token into a train and a validation part")
    n_val = min(max(round(n * val_fraction), 1), n - 1)  # both parts keep at least one token
    return data[: n - n_val], data[n - n_val :]


def get_batch(
    data: Sequence[int] | Tensor,
    batch_size: int,
    context_length: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """A random batch of windows for next-token prediction.

    Returns ``(x, y)``, both int64 of shape ``(B, T)`` = ``(batch_size, context_length)``, where
    ``y[b, t] == x[b, t + 1]`` inside the window: ``y`` is ``x`` shifted one token left, so at every
    position t the model is asked for the token that follows ``x[b, :t + 1]``. One window thus holds
    T training examples, one per prefix -- the reason a causal mask is needed.

    Start positions are uniform over the ``len(data) - T`` possible windows; pass a
    ``torch.Generator`` (on the CPU) to make the batches reproducible.
    """
    data = _as_token_tensor(data)
    _check_positive(batch_size=batch_size, context_length=context_length)
    n = len(data)
    if n < context_length + 1:
        raise ValueError(
            f"data has {n} tokens, but one window of context_length={context_length} needs "
            f"{context_length + 1} (the inputs plus one more token for the last target); "
            f"use a shorter context_length or more text"
        )
    starts = torch.randint(n - context_length, (batch_size,), generator=generator)
    offsets = starts[:, None] + torch.arange(context_length + 1)  # (B, T + 1)
    windows = data[offsets.to(data.device)]
    x, y = windows[:, :-1], windows[:, 1:]
    if device is not None:
        x, y = x.to(device), y.to(device)
    return x, y


class TokenDataset(Dataset):
    """Fixed windows over one token sequence, for a ``torch.utils.data.DataLoader``.

    Item i is ``(x, y)``, two int64 tensors of shape ``(T,)``, from the window that starts at token
    ``i * stride``; ``y`` is ``x`` shifted by one, as in :func:`get_batch`. With the default
    ``stride = context_length`` the inputs do not overlap, so one pass over the dataset (an
    "epoch") predicts almost every token exactly once; a smaller stride gives more, overlapping
    windows. A DataLoader with ``batch_size=B`` then yields ``(B, T)`` batches.
    """

    def __init__(
        self, data: Sequence[int] | Tensor, context_length: int, stride: int | None = None
    ) -> None:
        self.data = _as_token_tensor(data)
        stride = context_length if stride is None else stride
        _check_positive(context_length=context_length, stride=stride)
        if len(self.data) < context_length + 1:
            raise ValueError(
                f"data has {len(self.data)} tokens, but one window of context_length="
                f"{context_length} needs {context_length + 1}; use a shorter context_length"
            )
        self.context_length = context_length
        self.stride = stride

    def __len__(self) -> int:
        return (len(self.data) - self.context_length - 1) // self.stride + 1

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"window {index} is out of range for a dataset of {n} windows")
        start = index * self.stride
        window = self.data[start : start + self.context_length + 1]
        return window[:-1], window[1:]

    def __repr__(self) -> str:
        return (
            f"TokenDataset({len(self)} windows, context_length={self.context_length}, "
            f"stride={self.stride}, tokens={len(self.data)})"
        )


# ---------------------------------------------------------------------- synthetic tasks
def _sequence_task(
    name: str,
    batch_size: int,
    min_len: int,
    max_len: int,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """Random digit strings and a transformation of them, framed with special tokens."""
    _check_positive(batch_size=batch_size, min_len=min_len, max_len=max_len)
    if min_len > max_len:
        raise ValueError(f"min_len ({min_len}) must not exceed max_len ({max_len})")
    v = SYNTHETIC_VOCAB
    lengths = torch.randint(min_len, max_len + 1, (batch_size,), generator=generator)  # (B,)
    digits = torch.randint(
        v.FIRST_DIGIT, v.FIRST_DIGIT + 10, (batch_size, max_len), generator=generator
    )
    pos = torch.arange(max_len)[None, :]  # (1, max_len)
    valid = pos < lengths[:, None]  # (B, max_len): True on the real tokens, False on padding
    body = digits.masked_fill(~valid, v.PAD)
    if name == "copy":
        answer = body
    elif name == "reverse":
        # position t of the answer takes input position len - 1 - t; padding positions stay PAD
        idx = (lengths[:, None] - 1 - pos).clamp(min=0)
        answer = body.gather(1, idx).masked_fill(~valid, v.PAD)
    elif name == "sort":
        # push padding to the end by sorting it as a value larger than any digit
        answer = body.masked_fill(~valid, v.PLUS + 1).sort(dim=1).values.masked_fill(~valid, v.PAD)
    else:  # pragma: no cover - the public functions below choose the name
        raise ValueError(name)
    rows = torch.arange(batch_size)
    src = torch.full((batch_size, max_len + 1), v.PAD, dtype=torch.long)
    src[:, :max_len] = body
    src[rows, lengths] = v.EOS
    tgt = torch.full((batch_size, max_len + 2), v.PAD, dtype=torch.long)
    tgt[:, 0] = v.BOS
    tgt[:, 1 : max_len + 1] = answer
    tgt[rows, lengths + 1] = v.EOS
    return src, tgt


_TASK_DOC = """

    Returns ``(src, tgt)``, int64 tensors of shapes ``(B, max_len + 1)`` and ``(B, max_len + 2)``:

    * ``src`` = digits, ``<eos>``, then ``<pad>`` up to the width;
    * ``tgt`` = ``<bos>``, the answer, ``<eos>``, then ``<pad>``.

    Lengths vary from ``min_len`` to ``max_len`` inside a batch, so padding masks matter. For
    teacher forcing, feed the decoder ``tgt[:, :-1]`` and compute the loss against ``tgt[:, 1:]``
    (ignoring ``PAD``). Decode a row with ``SYNTHETIC_VOCAB.decode(row)``. All randomness comes from
    ``generator``, so a seeded ``torch.Generator`` gives the same batch every time.
    """


def copy_task(
    batch_size: int, min_len: int = 1, max_len: int = 8, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    return _sequence_task("copy", batch_size, min_len, max_len, generator)


def reverse_task(
    batch_size: int, min_len: int = 1, max_len: int = 8, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    return _sequence_task("reverse", batch_size, min_len, max_len, generator)


def sort_task(
    batch_size: int, min_len: int = 1, max_len: int = 8, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    return _sequence_task("sort", batch_size, min_len, max_len, generator)


copy_task.__doc__ = (
    "Copy a digit string: ``3 1 4`` -> ``3 1 4``. The easiest task: cross-attention learns to look at"
    " source position t when writing output position t (a diagonal attention map)." + _TASK_DOC
)
reverse_task.__doc__ = (
    "Reverse a digit string: ``3 1 4`` -> ``4 1 3``. The cross-attention map becomes an"
    " anti-diagonal." + _TASK_DOC
)
sort_task.__doc__ = (
    "Sort a digit string: ``3 1 4`` -> ``1 3 4``. Each output digit depends on the whole input, so"
    " cross-attention cannot be a fixed pattern." + _TASK_DOC
)


def addition_task(
    batch_size: int,
    max_digits: int = 3,
    generator: torch.Generator | None = None,
    reverse_answer: bool = False,
) -> tuple[Tensor, Tensor]:
    """Add two numbers: ``12+345`` -> ``357``.

    Operands are uniform in ``[0, 10**max_digits)``. Returns ``(src, tgt)``, int64 tensors of shapes
    ``(B, 2 * max_digits + 2)`` (``a``, ``+``, ``b``, ``<eos>``, padding) and ``(B, max_digits + 3)``
    (``<bos>``, the sum's up to ``max_digits + 1`` digits, ``<eos>``, padding).

    With ``reverse_answer=True`` the sum is written least-significant digit first (``357`` -> ``753``):
    the order in which a person carries, and a much easier task for a model that writes left to
    right -- try both.
    """
    _check_positive(batch_size=batch_size, max_digits=max_digits)
    if max_digits > 18:
        raise ValueError(f"max_digits must be at most 18 (int64 arithmetic), got {max_digits}")
    v = SYNTHETIC_VOCAB
    a = torch.randint(10**max_digits, (batch_size,), generator=generator)
    b = torch.randint(10**max_digits, (batch_size,), generator=generator)
    src = torch.full((batch_size, 2 * max_digits + 2), v.PAD, dtype=torch.long)
    tgt = torch.full((batch_size, max_digits + 3), v.PAD, dtype=torch.long)
    for row, (x, y) in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
        s = v.encode(f"{x}+{y}") + [v.EOS]
        answer = str(x + y)[::-1] if reverse_answer else str(x + y)
        t = [v.BOS, *v.encode(answer), v.EOS]
        src[row, : len(s)] = torch.tensor(s)
        tgt[row, : len(t)] = torch.tensor(t)
    return src, tgt


SYNTHETIC_TASKS = {
    "copy": copy_task,
    "reverse": reverse_task,
    "sort": sort_task,
    "addition": addition_task,
}
"""The synthetic tasks by name, so a chapter can loop over them."""


# ---------------------------------------------------------------------- interpretability
def repeated_random_sequences(
    batch_size: int,
    seq_len: int,
    vocab_size: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random token sequences whose second half repeats the first half: ``(B, seq_len)`` int64.

    ``[a b c d | a b c d]``. The first half is uniform noise, unpredictable whatever the model
    does; in the second half every token can be predicted by finding the previous occurrence of the
    current token and copying the token that came after it. That two-step lookup is what an
    *induction head* does: once one forms, the loss on the second half drops to nearly zero while
    the first half stays at ``log(vocab_size)``.
    """
    _check_positive(batch_size=batch_size, seq_len=seq_len, vocab_size=vocab_size)
    if seq_len % 2:
        raise ValueError(f"seq_len must be even (two equal halves), got {seq_len}")
    half = torch.randint(vocab_size, (batch_size, seq_len // 2), generator=generator)
    return torch.cat([half, half], dim=1)
