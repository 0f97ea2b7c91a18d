"""How well has a language model learned its text? Its loss, measured so that it can be compared.

* :func:`text_loss`: the model's mean loss over a whole text, in nats per token (and, with
  :func:`nats_per_char`, per character, the unit in which models with different tokenizers and a
  corpus's entropy floor -- the book's ``attention_book.floor`` computes the story corpus's -- can be
  compared). Every token is scored exactly once, and every token after the first window sees at
  least half a window of context: a random window's first tokens see almost nothing and would make
  the loss look worse than the model is (the sliding-window evaluation of language-model papers).
* :func:`sample_stories` writes texts begun where a story begins; the book's
  ``attention_book.grammar.grammatical_share`` scores them against the story grammar, with a 95%
  interval from :func:`wilson_interval`.

What a reader should notice: a share without its interval and a loss without the floor it could
reach say little.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = [
    "nats_per_char",
    "sample_stories",
    "text_loss",
    "wilson_interval",
]


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for a proportion (95% for ``z=1.96``).

    Unlike "p ± 1.96·sqrt(p(1-p)/n)" it stays inside [0, 1] and is honest near 0% and 100%, where
    the book's shares live (98 of 100 sentences grammatical is not "98% ± 2.7%").
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (the number of trials), got {n!r}")
    if isinstance(successes, bool) or not isinstance(successes, int) or not 0 <= successes <= n:
        raise ValueError(f"successes must be an int in [0, n={n}], got {successes!r}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@torch.no_grad()
def sample_stories(
    model: nn.Module,
    tokenizer,
    n: int = 64,
    max_new_tokens: int = 63,
    seed: int = 0,
    batch_size: int = 64,
    **sampling,
) -> list[str]:
    """``n`` texts written by ``model``, each begun where a story begins (after the blank line).

    ``sampling`` goes to ``model.generate`` (``temperature``, ``top_k``, ``top_p``, ``greedy``). The
    same seed gives the same texts. Score them with ``attention_book.grammar.grammatical_share``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    start = tokenizer.encode("\n\n")
    gen = torch.Generator().manual_seed(seed)
    texts: list[str] = []
    for first in range(0, n, batch_size):
        rows = min(batch_size, n - first)
        idx = torch.tensor([start] * rows, dtype=torch.long)
        out = model.generate(idx, max_new_tokens=max_new_tokens, generator=gen, **sampling)
        texts += [tokenizer.decode(row[len(start):].tolist()) for row in out]
    return texts


@torch.no_grad()
def text_loss(model: nn.Module, ids: Tensor | list[int], context_length: int | None = None) -> float:
    """Mean cross-entropy of ``model`` on the token sequence ``ids``, in nats per token.

    Windows of ``context_length`` tokens (default: the model's) move by half a window; each token
    is scored once, in the first window where it has at least half a window before it (the tokens of
    the very first window are scored with the context they have). The model runs in eval mode.
    """
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    T = context_length or model.config.context_length
    if ids.numel() < 2:
        raise ValueError(f"ids must hold at least 2 tokens to score one prediction, got {ids.numel()}")
    stride = max(1, T // 2)
    starts = [0]
    while starts[-1] + T + 1 < ids.numel():
        starts.append(starts[-1] + stride)
    was_training = model.training
    model.eval()
    try:
        total, count = 0.0, 0
        # windows of equal length run as one batch; the last (shorter) one runs alone
        full = [s for s in starts if s + T + 1 <= ids.numel()]
        groups = [full[i : i + 64] for i in range(0, len(full), 64)]
        groups += [[s] for s in starts if s + T + 1 > ids.numel()]
        for group in groups:
            windows = torch.stack([ids[s : s + T + 1] for s in group])  # (windows, <= T + 1)
            logp = torch.log_softmax(model(windows[:, :-1]).double(), dim=-1)
            nll = -logp.gather(2, windows[:, 1:, None])[..., 0]  # (windows, T)
            for row, s in zip(nll, group, strict=True):
                skip = 0 if s == 0 else T - stride  # tokens already scored by the previous window
                total += float(row[skip:].sum())
                count += row.numel() - skip
    finally:
        model.train(was_training)
    return total / count


def nats_per_char(loss_per_token: float, ids: Tensor | list[int], tokenizer) -> float:
    """Convert a loss in nats per token over ``ids`` into nats per character of the text they encode.

    The loss is over predictions of ``ids[1:]``, so the characters counted are those of ``ids[1:]``.
    """
    ids = torch.as_tensor(ids, dtype=torch.long).flatten().tolist()
    n_chars = len(tokenizer.decode(ids[1:]))
    if n_chars == 0:
        raise ValueError("the ids decode to no characters")
    return loss_per_token * (len(ids) - 1) / n_chars
