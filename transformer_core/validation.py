"""Argument checks, written once: a clear error at the door instead of a crash deep inside torch.

Every config and public function of the package checks what it is given with these helpers, so the
same mistake gets the same message everywhere. :class:`Config` is the shared base of the package's
config dataclasses (``GPTConfig``, ``MoEGPTConfig``, ``BERTConfig``, ``TransformerConfig``,
``TrainConfig``): the plain-dict round trip a saved file needs.

Token ids are checked at the models' public entry points by :func:`check_token_ids`. Their shape and
type cost nothing to check; their *values* (is every id inside the vocabulary?) have to be read, and
reading a tensor that lives on a GPU makes the CPU wait for the GPU. So the values are read where
that is free (ids on the CPU) or asked for (once per ``generate``), and never while ``torch.compile``
or ``torch.export`` traces a model (a traced id has no value yet).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "Config",
    "check_choice",
    "check_fraction",
    "check_heads",
    "check_int",
    "check_model_shape",
    "check_number",
    "check_token_ids",
    "is_int",
    "is_number",
    "values_are_free",
]


def is_int(value: object) -> bool:
    """An ``int`` that is not a ``bool`` (``True`` is an ``int`` to Python, never a size here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """A finite ``int`` or ``float`` (not a ``bool``)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_int(name: str, value: object, minimum: int = 1, optional: bool = False) -> Any:
    """``value`` is an int ``>= minimum`` (or None, if ``optional``); returns it."""
    if optional and value is None:
        return value
    if not is_int(value) or value < minimum:  # type: ignore[operator]
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {what}{' or None' if optional else ''}, got {value!r}")
    return value


def check_number(name: str, value: object, minimum: float | None = None, optional: bool = False) -> Any:
    """``value`` is a finite number, ``>= minimum`` if given (or None, if ``optional``); returns it.

    Not a number at all is a TypeError; NaN, infinity or too small a number a ValueError.
    """
    if optional and value is None:
        return value
    what = "a finite number" + (f" >= {minimum}" if minimum is not None else "") + (" or None" if optional else "")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be {what}, got {value!r}")
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


def check_fraction(name: str, value: object) -> Any:
    """``value`` is a number in ``[0, 1)``: a dropout rate, a label-smoothing weight."""
    if not is_number(value) or not 0.0 <= value < 1.0:  # type: ignore[operator]
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return value


def check_choice(name: str, value: object, choices: tuple) -> Any:
    """``value`` is one of ``choices``; returns it."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_heads(d_model: int, n_head: int) -> None:
    """Each of ``n_head`` heads gets an equal share of the width ``d_model``."""
    if d_model % n_head:
        raise ValueError(
            f"d_model={d_model} is not divisible by n_head={n_head}: each head gets d_model // n_head "
            f"dimensions; choose n_head among the divisors of d_model"
        )


def check_model_shape(config: Any, *sizes: str) -> None:
    """What every model config checks: the ``sizes`` fields (and ``d_ff``) are positive ints, the heads
    divide the width, ``dropout`` is in [0, 1). A ``d_ff`` of None becomes ``4 * d_model``."""
    for name in sizes:
        check_int(name, getattr(config, name))
    if config.d_ff is None:
        config.d_ff = 4 * config.d_model
    check_int("d_ff", config.d_ff)
    check_heads(config.d_model, config.n_head)
    check_fraction("dropout", config.dropout)


class Config:
    """The shared base of the package's config dataclasses: a plain-dict round trip for saving.

    ``to_dict()`` holds only strings, numbers, booleans, None and lists (what a weights-only file
    may hold); ``from_dict(d)`` refuses fields the class does not have, naming them.
    """

    def to_dict(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: Mapping) -> Any:
        unknown = set(d) - {f.name for f in fields(cls)}  # type: ignore[arg-type]
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
        return cls(**d)


def values_are_free(t: Tensor) -> bool:
    """Whether reading ``t``'s values costs nothing: on the CPU, and not while torch.compile or
    torch.export trace (where a tensor has no values yet). Reading a GPU tensor waits for the GPU."""
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def check_token_ids(
    idx: object,
    vocab_size: int,
    context_length: int | None = None,
    name: str = "idx",
    values: bool | None = None,
) -> Tensor:
    """Check that ``idx`` is a ``(B, T)`` integer tensor of ids in ``[0, vocab_size)``; return it.

    ``context_length`` bounds ``T``. ``values`` says whether to read the ids to check their range:
    ``None`` (the default) reads them only when that is free, for ids on the CPU and not while
    ``torch.compile``/``torch.export`` trace; ``True`` reads them anywhere (a GPU then waits once).
    """
    if not isinstance(idx, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of token ids, got {type(idx).__name__}; "
            f"wrap it with torch.tensor(..., dtype=torch.long)"
        )
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise TypeError(
            f"{name} holds {idx.dtype} values, but token ids must be integers; "
            f"convert with {name}.long() (and check how the ids were made)"
        )
    if idx.dim() != 2:
        hint = f"; for one sequence use {name}[None]" if idx.dim() == 1 else ""
        raise ValueError(f"{name} must have shape (B, T), got {tuple(idx.shape)}{hint}")
    B, T = idx.shape
    if B == 0 or T == 0:
        raise ValueError(f"{name} is empty (shape {tuple(idx.shape)}): give at least one token per sequence")
    if context_length is not None and T > context_length:
        raise ValueError(
            f"{name} has {T} tokens but the model's context_length is {context_length}; crop to the "
            f"last {context_length} tokens ({name}[:, -{context_length}:]) or use a larger context_length"
        )
    if values is None:
        values = values_are_free(idx)  # never wait for a GPU, never read a traced id
    if values:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(
                f"{name} contains token id {lo if lo < 0 else hi}, outside the vocabulary [0, "
                f"{vocab_size - 1}]; encode with the tokenizer the model was built for, or raise vocab_size"
            )
    return idx
