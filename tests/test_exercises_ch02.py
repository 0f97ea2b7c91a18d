"""The checks of chapter 02's exercises: ✓ for a right answer, a specific hint for each typical
wrong one, "not attempted" for the untouched stub, and never an exception."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attention_book.exercises import ch02


def verdict(capsys, ok: bool, *expected: str) -> None:
    out = capsys.readouterr().out
    assert ok is (out.startswith("✓")), out
    for text in expected:
        assert text in out, f"expected {text!r} in the feedback, got: {out}"


def stub(*args, **kwargs):
    raise NotImplementedError


# --- exercise 1: split and merge heads ------------------------------------------------------------


def split_right(x, n_head):
    B, T, D = x.shape
    return x.view(B, T, n_head, D // n_head).transpose(1, 2)


def merge_right(x):
    B, H, T, hd = x.shape
    return x.transpose(1, 2).reshape(B, T, H * hd)


def test_split_heads_right(capsys):
    assert ch02.check_split_heads(split_right, merge_right) is True
    verdict(capsys, True, "✓")


def test_split_heads_contiguous_view_is_right_too(capsys):
    def merge(x):
        B, H, T, hd = x.shape
        return x.transpose(1, 2).contiguous().view(B, T, H * hd)

    assert ch02.check_split_heads(split_right, merge) is True


@pytest.mark.parametrize(
    ("split", "merge", "hint"),
    [
        (lambda x, h: x.view(x.shape[0], h, x.shape[1], x.shape[2] // h), merge_right,
         "head dimension got mixed with time"),
        (lambda x, h: x.reshape(x.shape[0], h, x.shape[1], x.shape[2] // h), merge_right,
         "view(B, T, H, hd), then transpose(1, 2)"),
        (lambda x, h: x.view(x.shape[0], x.shape[1], h, x.shape[2] // h), merge_right,
         "Add .transpose(1, 2)"),
        (lambda x, h: x.view(x.shape[0], x.shape[1], x.shape[2] // h, h).permute(0, 3, 1, 2),
         merge_right, "every H-th feature"),
        (lambda x, h: x.view(x.shape[0], x.shape[1], h, x.shape[2] // h).transpose(1, 2).flip(-1),
         merge_right, "right shape but the wrong contents"),
        (lambda x, h: x, merge_right, "expected (B, H, T, hd)"),
        (split_right, lambda x: x.reshape(x.shape[0], x.shape[2], -1),
         "heads and time got mixed"),
        (split_right, lambda x: x.transpose(1, 2).view(x.shape[0], x.shape[2], -1),
         ".contiguous()"),
        (split_right, lambda x: x.transpose(1, 2), "expected (B, T, D)"),
        (lambda x, h: None, merge_right, "forget a `return`"),
    ],
)
def test_split_heads_mistakes(capsys, split, merge, hint):
    assert ch02.check_split_heads(split, merge) is False
    verdict(capsys, False, hint)


def test_split_heads_stub(capsys):
    assert ch02.check_split_heads(stub, stub) is False
    verdict(capsys, False, "not attempted")


# --- exercise 2: the parameter count --------------------------------------------------------------


def test_parameter_count_right(capsys):
    assert ch02.check_parameter_count(lambda d, h, bias=True: 4 * d * d + (4 * d if bias else 0))
    verdict(capsys, True)


@pytest.mark.parametrize(
    ("count", "hint"),
    [
        (lambda d, h, bias=True: h * (4 * d * d + (4 * d if bias else 0)), "changes with n_head"),
        (lambda d, h, bias=True: 4 * d * d + 4 * h if bias else 4 * d * d, "changes with n_head"),
        (lambda d, h, bias=True: 3 * d * d + (3 * d if bias else 0), "output projection"),
        (lambda d, h, bias=True: 4 * d * d, "bias vector of length D"),
        (lambda d, h, bias=True: 4 * d * d + 4 * d, "no bias vectors"),
        (lambda d, h, bias=True: 4 * d * d + (d if bias else 0), "4·D, not D"),
        (lambda d, h, bias=True: 4 * d * d + (4 * d if bias else 0) + 1, "you counted"),
        (lambda d, h, bias=True: 0.5, "whole number"),
        (lambda d, h, bias=True: None, "forget a `return`"),
    ],
)
def test_parameter_count_mistakes(capsys, count, hint):
    assert ch02.check_parameter_count(count) is False
    verdict(capsys, False, hint)


def test_parameter_count_stub(capsys):
    assert ch02.check_parameter_count(stub) is False
    verdict(capsys, False, "not attempted")


# --- exercise 3: the causal mask ------------------------------------------------------------------


def test_causal_mask_right(capsys):
    assert ch02.check_causal_mask(lambda T: torch.tril(torch.ones(T, T, dtype=torch.bool)))
    verdict(capsys, True)


def test_causal_mask_by_comparison_is_right(capsys):
    assert ch02.check_causal_mask(lambda T: torch.arange(T)[None, :] <= torch.arange(T)[:, None])


@pytest.mark.parametrize(
    ("build", "hint"),
    [
        (lambda T: ~torch.tril(torch.ones(T, T, dtype=torch.bool)), "nn.MultiheadAttention"),
        (lambda T: torch.triu(torch.ones(T, T, dtype=torch.bool), 1), "nn.MultiheadAttention"),
        (lambda T: torch.triu(torch.ones(T, T, dtype=torch.bool)), "upper triangle"),
        (lambda T: torch.tril(torch.ones(T, T, dtype=torch.bool), -1), "diagonal is missing"),
        (lambda T: torch.tril(torch.ones(T, T)), "dtype=torch.bool"),
        (lambda T: torch.zeros(T, T).masked_fill(~torch.tril(torch.ones(T, T, dtype=torch.bool)),
                                                 float("-inf")), "float mask"),
        (lambda T: torch.ones(T, T, dtype=torch.bool), "hides nothing"),
        (lambda T: torch.tril(torch.ones(T, T, dtype=torch.bool))[:, :-1], "shape"),
        (lambda T: torch.eye(T, dtype=torch.bool), "row i should be True for keys 0..i"),
        (lambda T: [[True]], "torch.Tensor"),
    ],
)
def test_causal_mask_mistakes(capsys, build, hint):
    assert ch02.check_causal_mask(build) is False
    verdict(capsys, False, hint)


def test_causal_mask_stub(capsys):
    assert ch02.check_causal_mask(stub) is False
    verdict(capsys, False, "not attempted")


# --- exercise 4: multi-query attention ------------------------------------------------------------


class MQABase(nn.Module):
    """The exercise's __init__; subclasses write forward (right or with a typical mistake)."""

    causal = True
    scale_by = "head_dim"
    use_out_proj = True

    def __init__(self, d_model, n_head):
        super().__init__()
        self.d_model, self.n_head, self.head_dim = d_model, n_head, d_model // n_head
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, self.head_dim)
        self.v_proj = nn.Linear(d_model, self.head_dim)
        self.out_proj = nn.Linear(d_model, d_model)

    def heads(self, x):
        B, T, D = x.shape
        H, hd = self.n_head, self.head_dim
        q = self.q_proj(x).view(B, T, H, hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, 1, hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, 1, hd).transpose(1, 2)
        return q, k, v

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.heads(x)
        scale = {"head_dim": self.head_dim, "d_model": D, "none": 1}[self.scale_by]
        scores = q @ k.transpose(-2, -1) / math.sqrt(scale)
        if self.causal:
            allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))
            scores = scores.masked_fill(~allowed, float("-inf"))
        out = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, D)
        return self.out_proj(out) if self.use_out_proj else out


class NoMask(MQABase):
    causal = False


class ScaleByD(MQABase):
    scale_by = "d_model"


class NoScale(MQABase):
    scale_by = "none"


class NoOutProj(MQABase):
    use_out_proj = False


class Unmerged(MQABase):
    def forward(self, x):
        q, k, v = self.heads(x)
        return torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v  # (B, H, T, hd)


class FullWidthKV(MQABase):
    def __init__(self, d_model, n_head):
        super().__init__(d_model, n_head)
        self.k_proj = nn.Linear(d_model, d_model)


class RenamedProjections(nn.Module):
    def __init__(self, d_model, n_head):
        super().__init__()
        self.qkv = nn.Linear(d_model, 3 * d_model)

    def forward(self, x):
        return x


class ReturnsWeightsToo(MQABase):
    def forward(self, x):
        return super().forward(x), None


class StubMQA(MQABase):
    def forward(self, x):
        raise NotImplementedError


class Shuffled(MQABase):
    def forward(self, x):
        return super().forward(x).flip(-1)


def test_mqa_right(capsys):
    assert ch02.check_multi_query_attention(MQABase) is True
    verdict(capsys, True)


def test_mqa_may_return_weights_too(capsys):
    assert ch02.check_multi_query_attention(ReturnsWeightsToo) is True


@pytest.mark.parametrize(
    ("cls", "hint"),
    [
        (NoMask, "later tokens leak"),
        (ScaleByD, "divide by √hd = √4"),
        (NoScale, "not scaled"),
        (NoOutProj, "out_proj (W^O) is missing"),
        (Unmerged, "unmerged"),
        (FullWidthKV, "ONE key head"),
        (RenamedProjections, "keep the __init__ as given"),
        (Shuffled, "largest difference"),
    ],
)
def test_mqa_mistakes(capsys, cls, hint):
    assert ch02.check_multi_query_attention(cls) is False
    verdict(capsys, False, hint)


def test_mqa_stub(capsys):
    assert ch02.check_multi_query_attention(StubMQA) is False
    verdict(capsys, False, "not attempted")


def test_checks_leave_the_random_state_alone():
    torch.manual_seed(42)
    expected = torch.rand(3)
    torch.manual_seed(42)
    ch02.check_multi_query_attention(MQABase)
    assert torch.equal(torch.rand(3), expected)


# --- exercise 5: an experiment, the steps two heads need to reach 90% ------------------------------


def test_steps_to_90_percent_accepts_the_measured_range(capsys):
    for found in (210, *ch02.STEPS_TO_90_PERCENT):
        assert ch02.check_steps_to_90_percent(lambda found=found: found) is True
        verdict(capsys, True, "✓ steps_to_90_percent")


@pytest.mark.parametrize(
    ("answer", "message", "hint"),
    [
        (50, "is too low", "both answers (one back and two back)"),
        (300, "is too high", "in steps of 10"),
    ],
)
def test_steps_to_90_percent_explains_a_wrong_answer(capsys, answer, message, hint):
    assert ch02.check_steps_to_90_percent(lambda: answer) is False
    verdict(capsys, False, "✗ steps_to_90_percent", message, hint, "170 to 240 steps")


def test_steps_to_90_percent_not_attempted(capsys):
    assert ch02.check_steps_to_90_percent(stub) is False
    verdict(capsys, False, "not attempted yet")
