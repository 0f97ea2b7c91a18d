"""Auto-checks for chapter 05, *The GPT model*.

Each check runs the reader's function on small inputs, compares it with the package's answer and, when
they differ, says which part is off. The parameter count is probed one dimension at a time (vocabulary,
context, depth, width), so the hint can name the part that is wrong: the embeddings, attention, the
feed-forward network or the norms. The checks use their own random numbers (``torch.random.fork_rng``):
running one does not change the reader's random state.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from transformer_core.gpt import GPT, GPTConfig

from ._checker import Feedback, need_number
from ._checker import run_seeded_check as _check
from ._measured import check_measured

__all__ = [
    "check_gpt_parameter_count",
    "check_uniform_loss",
    "check_tie_weights",
    "check_causal_logits",
    "check_embedding_std",
    "gpt_parameter_count",
]


# ---------------------------------------------------------------------------------- parameter count
def gpt_parameter_count(vocab_size: int, context_length: int, n_layer: int, d_model: int) -> int:
    """Parameters of ``GPT(GPTConfig(...))`` with the defaults: tied head, d_ff = 4·d_model, biases."""
    cfg = GPTConfig(vocab_size=vocab_size, context_length=context_length, n_layer=n_layer,
                    n_head=1, d_model=d_model)
    with torch.device("meta"):  # shapes only: no memory, no time
        return GPT(cfg).num_parameters()


def _per_block_hint(a: int, b: int) -> str:
    """Hint for a per-block count of a·D² + b·D (expected 12·D² + 13·D)."""
    if a != 12:
        hints = {
            11: ("attention: it has four d_model×d_model matrices, W_Q, W_K, W_V and the output "
                 "projection W_O; you counted three."),
            8: ("per block you count 8·d_model² weights; expected 12·d_model²: attention has "
                "4·d_model² (W_Q, W_K, W_V, W_O) and the MLP 8·d_model² (two d_model × 4·d_model "
                "matrices). One of the two is missing."),
            4: ("per block you count 4·d_model² weights; expected 12·d_model²: the MLP's two "
                "d_model × 4·d_model matrices (8·d_model²) are missing."),
            6: ("the MLP: its hidden width is d_ff = 4·d_model, so its two matrices hold "
                "2 · d_model · 4·d_model = 8·d_model² weights. You used d_ff = d_model."),
            16: ("the MLP: GPT-2's has two matrices (8·d_model²), not three: a third matrix is "
                 "SwiGLU's, a different feed-forward."),
        }
        return hints.get(a, (
            f"per block you count {a}·d_model² weights; expected 12·d_model²: attention 4·d_model² "
            "(W_Q, W_K, W_V, W_O) and the MLP 8·d_model² (d_model × 4·d_model and back)."))
    hints = {
        4: ("the biases are missing: 4·d_model in attention (one per projection) and "
            "4·d_model + d_model in the MLP (its two layers), 9·d_model per block."),
        0: ("the biases and the LayerNorms are missing: per block 9·d_model of biases and "
            "4·d_model for the two LayerNorms (weight and bias each)."),
        9: ("the two LayerNorms of each block are missing: each has a weight and a bias of "
            "d_model entries, 4·d_model per block."),
        11: ("each LayerNorm has a weight *and* a bias: 2·d_model per norm, 4·d_model for the two "
             "in a block."),
        10: ("the MLP's first bias has d_ff = 4·d_model entries (one per hidden unit), not d_model."),
        15: "there are two LayerNorms per block (ln_1 before attention, ln_2 before the MLP), not three.",
        12: "d_model parameters are missing in each block: the MLP's output bias or the attention output bias.",
    }
    return hints.get(b, (
        f"per block, the part proportional to d_model is {b}·d_model; expected 13·d_model: "
        "biases (attention 4·d_model, MLP 4·d_model + d_model) and two LayerNorms (4·d_model)."))


def check_gpt_parameter_count(count: Callable[[int, int, int, int], int]) -> bool:
    """Check ``count(vocab_size, context_length, n_layer, d_model)`` against real GPTs."""

    def body() -> None:
        def f(V: int, T: int, L: int, D: int) -> float:
            return need_number(count(V, T, L, D), "your function")

        V, T, L, D = 100, 32, 2, 16
        base = f(V, T, L, D)
        per_vocab = f(V + 1, T, L, D) - base
        if per_vocab != D:
            if per_vocab == 2 * D:
                raise Feedback(
                    "embeddings: each extra vocabulary entry adds 2·d_model in your count. The output "
                    "head is tied to the token embedding: it is the same (vocab_size, d_model) matrix, "
                    "so count it once."
                )
            if per_vocab == 0:
                raise Feedback("embeddings: the token embedding (vocab_size × d_model) is missing.")
            raise Feedback(
                f"embeddings: each extra vocabulary entry adds {per_vocab:g} parameters in your count; "
                "it should add d_model (one row of the token embedding, shared with the tied head)."
            )
        per_position = f(V, T + 1, L, D) - base
        if per_position != D:
            if per_position == 0:
                raise Feedback(
                    "embeddings: the learned position embedding (context_length × d_model, GPT-2's "
                    "wpe) is missing."
                )
            raise Feedback(
                f"embeddings: each extra position adds {per_position:g} parameters in your count; it "
                "should add d_model (one row of the position embedding)."
            )
        # per block as a polynomial a·D² + b·D, from three widths
        blocks = [f(V, T, L + 1, d) - f(V, T, L, d) for d in (16, 32, 48)]
        a = (blocks[1] - 2 * blocks[0]) / (32 * 32 - 2 * 16 * 16)  # b·D cancels out
        b = (blocks[0] - a * 16 * 16) / 16
        if abs(blocks[2] - (a * 48 * 48 + b * 48)) > 0.5 or a != round(a) or b != round(b):
            raise Feedback(
                f"blocks: one more layer adds {blocks[0]:g} parameters at d_model=16 in your count; a real "
                f"block has {12 * 16 * 16 + 13 * 16:,} (12·d_model² + 13·d_model)."
            )
        if (round(a), round(b)) != (12, 13):
            raise Feedback(_per_block_hint(round(a), round(b)))
        rest = [f(V, T, L, d) - (V + T) * d - L * (12 * d * d + 13 * d) for d in (16, 32)]
        if rest != [2 * 16, 2 * 32]:
            if rest == [0, 0]:
                raise Feedback(
                    "the final LayerNorm (ln_f, after the last block: weight and bias, 2·d_model) is "
                    "missing. Everything else is right."
                )
            raise Feedback(
                f"embeddings and blocks are right; what remains is {rest[0]:g} at d_model=16, expected "
                "2·d_model = 32 for the final LayerNorm ln_f."
            )
        for cfg in [(96, 64, 4, 32), (50257, 1024, 12, 768)]:
            if f(*cfg) != gpt_parameter_count(*cfg):
                raise Feedback(
                    f"right for small models, but for {cfg} your count is {f(*cfg):,.0f}, the model has "
                    f"{gpt_parameter_count(*cfg):,}."
                )

    return _check("gpt_parameter_count", body)


# ---------------------------------------------------------------------------------- uniform loss
def check_uniform_loss(uniform_loss: Callable[[int], float]) -> bool:
    """Check ``uniform_loss(vocab_size)``: the cross-entropy of a uniform prediction, ln(vocab_size)."""

    def body() -> None:
        for V in (2, 96, 50257):
            got = need_number(uniform_loss(V), "uniform_loss")
            want = float(nn.functional.cross_entropy(torch.zeros(1, V), torch.tensor([0])))
            if math.isclose(got, want, rel_tol=1e-4):
                continue
            wrong = [
                (math.log2(V), "that's the loss in bits (log base 2). PyTorch's cross_entropy uses the natural log: math.log."),
                (math.log10(V), "that's log base 10. Cross-entropy in PyTorch uses the natural log: math.log."),
                (1 / V, "that's the probability the model gives each token. The loss is minus its log: −ln(1/V)."),
                (-math.log(V), "the sign is off: the loss is −ln p, and ln(1/V) is negative, so the loss is +ln V."),
                (math.log(1 / V), "the sign is off: the loss is −ln p, and ln(1/V) is negative, so the loss is +ln V."),
                (float(V), "that's the vocabulary size. The loss is −ln of the probability of the right token, 1/V."),
                (math.log(V - 1), "off by one: with V tokens each gets probability 1/V, so the loss is ln V."),
            ]
            for value, message in wrong:
                if math.isclose(got, value, rel_tol=1e-4, abs_tol=1e-9):
                    raise Feedback(f"for vocab_size={V} you return {got:.4g}: {message}")
            raise Feedback(
                f"for vocab_size={V} you return {got:.4g}; a model that gives every token the same "
                f"probability 1/V has a cross-entropy of {want:.4f}."
            )

    return _check("uniform_loss", body)


# ---------------------------------------------------------------------------------- weight tying
def check_tie_weights(tie_weights: Callable[[GPT], GPT]) -> bool:
    """Check ``tie_weights(model)`` on an untied GPT: afterwards head and embedding are one Parameter."""

    def body() -> None:
        model = GPT(GPTConfig.tiny(vocab_size=50, context_length=16, tie_weights=False))
        n_before = model.num_parameters()
        result = tie_weights(model)
        if result is None:
            raise Feedback("tie_weights returned None: return the model (after tying its weights).")
        if result is not model:
            raise Feedback("tie_weights should tie the weights of the model it is given and return that model.")
        emb, head = model.tok_emb.weight, model.lm_head.weight
        if head is not emb:
            if head.shape != emb.shape:
                raise Feedback(
                    f"the head's weight has shape {tuple(head.shape)}, the embedding's {tuple(emb.shape)}. "
                    "No transpose is needed: nn.Linear(d_model, vocab_size) stores its weight as "
                    "(vocab_size, d_model), the embedding's shape."
                )
            if head.data_ptr() == emb.data_ptr():
                raise Feedback(
                    "the two share memory (through .data), but they are still two Parameters: "
                    "model.parameters() lists both and each gets its own gradient. Assign the Parameter "
                    "itself: model.lm_head.weight = model.tok_emb.weight."
                )
            if torch.equal(head, emb):
                raise Feedback(
                    "the head now holds the same *values* as the embedding, but in a separate tensor: "
                    "the first training step pulls them apart. Assign the Parameter itself: "
                    "model.lm_head.weight = model.tok_emb.weight."
                )
            raise Feedback(
                "the head and the token embedding are still two different matrices. Make them one: "
                "model.lm_head.weight = model.tok_emb.weight."
            )
        saved = n_before - model.num_parameters()
        V, D = emb.shape
        if saved != V * D:
            raise Feedback(f"the model should be {V * D:,} parameters smaller after tying, it is {saved:,}.")
        logits = model(torch.randint(V, (2, 8)))
        if logits.shape != (2, 8, V):
            raise Feedback(f"after tying the model gives logits of shape {tuple(logits.shape)}, expected (2, 8, {V}).")

    return _check("tie_weights", body)


# ---------------------------------------------------------------------------------- causal logits
class _PeekingModel(nn.Module):
    """A GPT that cheats: every position also sees the mean of all logits, future ones included."""

    def __init__(self, inner: GPT) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, idx: Tensor) -> Tensor:
        logits = self.inner(idx)  # (B, T, V)
        return logits + logits.mean(dim=1, keepdim=True)  # the mean over T leaks the future


def check_causal_logits(max_change_before: Callable[[nn.Module, Tensor, int], float]) -> bool:
    """Check ``max_change_before(model, idx, t)``: the largest change of the logits at positions < t
    when the token at position t is replaced; 0 for a causal model, > 0 for one that peeks."""

    def body() -> None:
        model = GPT(GPTConfig.tiny(vocab_size=20, context_length=16)).eval()
        peeking = _PeekingModel(model).eval()
        idx = torch.randint(20, (2, 10))
        for t in (1, 4, 9):
            idx_before = idx.clone()
            got = need_number(max_change_before(model, idx, t), "max_change_before")
            if not torch.equal(idx, idx_before):
                raise Feedback(
                    "max_change_before changed the caller's idx in place. Change a copy: "
                    "idx2 = idx.clone(); idx2[:, t] = ..."
                )
            if got < 0:
                raise Feedback(f"you return {got:.3g}, a negative number: return the largest *absolute* change.")
            if got > 1e-4:
                raise Feedback(
                    f"for a causal GPT and t={t} you report a change of {got:.3g}, but logits before t "
                    "cannot change. Compare only positions 0 .. t-1 (logits[:, :t]); position t itself "
                    "sees the new token, and so do the positions after it."
                )
        for t in (1, 4, 9):
            got = need_number(max_change_before(peeking, idx, t), "max_change_before")
            if not torch.equal(idx, idx_before):
                raise Feedback("max_change_before changed the caller's idx in place. Change a copy: idx.clone().")
            if got <= 1e-4:
                raise Feedback(
                    f"for a model that does peek at the future you report {got:.3g} (t={t}). Does the second "
                    "run really see a different token at position t? Clone idx, set position t to another "
                    "id (e.g. (idx[:, t] + 1) % vocab_size), run the model on both and compare logits[:, :t]."
                )

    return _check("max_change_before", body)


# --------------------------------------------------------------------------------------------------
# Exercise 5 (an experiment): how large may the embedding start?
# --------------------------------------------------------------------------------------------------

# Measured with `python scripts/experiment_ranges.py ch05`: the chapter's GPT (2 layers, width 64,
# the corpus's 29 characters, GPT-2's init, the head tied), only the embedding redrawn from
# N(0, std), initial_loss on the chapter's random sequences (seed 1); bisection on the std at which
# the loss is ln V + 1 nat. Model seeds 0, 1, 2 gave 0.0688, 0.0702 and 0.0707. Accepted: that
# range widened by 0.005 on each side (an answer to two significant digits, a reader's own seed).
EMBEDDING_STD = (0.064, 0.076)


def check_embedding_std(embedding_std: Callable[[], object]) -> bool:
    """The reader's ``embedding_std()`` returns the std they found."""
    low, high = EMBEDDING_STD
    return check_measured(
        "embedding_std",
        embedding_std,
        low,
        high,
        too_low=(
            "At that std the untrained model is still less than a nat worse than ln V. Is your "
            "loss measured after gpt2_init, with only the embedding redrawn (gpt2_init after the "
            "redraw would undo it)? And is the target ln V + 1, not a loss of 1?"
        ),
        too_high=(
            "At that std the untrained model is already more than a nat worse than ln V: bisect "
            "between the last std below one nat and the first above it. Did you redraw the "
            "position table as well, or compare with ln V in another unit (log2)?"
        ),
    )
