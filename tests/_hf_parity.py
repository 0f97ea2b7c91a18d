"""What every Hugging Face parity test checks the same way: greedy tokens against HF's generate."""

from __future__ import annotations

import torch


def assert_greedy_matches_hf(ours, hf_model, prompt, max_new_tokens: int = 20) -> None:
    """``ours.generate(greedy=True)`` gives HF's ``generate(do_sample=False)`` tokens, cached or not."""
    with torch.no_grad():
        expected = hf_model.generate(
            prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
            max_new_tokens=max_new_tokens, pad_token_id=0,
        )
    assert expected.shape == (prompt.shape[0], prompt.shape[1] + max_new_tokens)  # HF did not stop early
    for use_cache in (True, False):
        out = ours.generate(prompt, max_new_tokens=max_new_tokens, greedy=True, use_cache=use_cache)
        assert torch.equal(out, expected)
