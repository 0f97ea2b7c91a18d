"""Mixture of experts: the routed layer against dense and naive references, the balance loss, capacity,
gradients, the MoE GPT and its training with the Trainer, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from transformer_core import GPT, FeedForward, GPTConfig
from transformer_core.moe import (
    MoEFeedForward,
    MoEGPT,
    MoEGPTConfig,
    expert_capacity,
    load_balancing_loss,
    moe_aux_loss,
    moe_language_model_loss,
    route_top_k,
    router_z_loss,
)
from transformer_core.training import TrainConfig, Trainer

D, FF = 16, 24


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    """The Trainer seeds the global generator and flushes denormals: give other tests their world back."""
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_rng_state(state)
    torch.set_num_threads(threads)
    torch.set_flush_denormal(False)


def layer(n_experts=4, top_k=1, seed=0, **kwargs) -> MoEFeedForward:
    torch.manual_seed(seed)
    moe = MoEFeedForward(D, FF, n_experts, top_k, **kwargs)
    with torch.no_grad():  # a router with opinions: N(0, 1) weights, not the tiny GPT-2 init
        moe.router.weight.normal_()
    return moe


def tokens(*shape, seed=1) -> torch.Tensor:
    return torch.randn(*shape, D, generator=torch.Generator().manual_seed(seed))


def naive_moe(moe: MoEFeedForward, x: torch.Tensor) -> torch.Tensor:
    """One token at a time: softmax over experts, the top-k, their gated outputs summed (no capacity)."""
    flat = x.reshape(-1, D)
    out = torch.zeros_like(flat)
    renorm = moe.normalize_gates if moe.normalize_gates is not None else moe.top_k > 1
    for t in range(flat.shape[0]):
        p = torch.softmax(moe.router(flat[t]), dim=-1)  # (E,)
        top_p, top_i = p.topk(moe.top_k)
        gates = top_p / top_p.sum() if renorm else top_p
        for g, e in zip(gates, top_i.tolist(), strict=True):
            out[t] += g * moe.experts[e](flat[t])
    return out.reshape(x.shape)


# ----------------------------------------------------------------------------- references
@pytest.mark.parametrize("activation", ["relu", "gelu", "swiglu"])
@pytest.mark.parametrize("shape", [(2, 5), (7,), (2, 3, 4)])
def test_one_expert_is_a_plain_feed_forward(activation, shape):
    moe = layer(1, 1, activation=activation)
    ffn = FeedForward(D, FF, activation)
    ffn.load_state_dict(moe.experts[0].state_dict())
    x = tokens(*shape)
    assert_close(moe(x), ffn(x))
    assert moe.routing.gates.eq(1).all() and moe.routing.expert_index.shape == (*shape, 1)


@pytest.mark.parametrize("n_experts", [2, 3, 5])
def test_all_experts_with_an_even_router_is_their_mean(n_experts):
    moe = layer(n_experts, n_experts)
    with torch.no_grad():
        moe.router.weight.zero_()  # every expert equally likely for every token
    x = tokens(3, 4)
    mean = torch.stack([expert(x) for expert in moe.experts]).mean(dim=0)
    assert_close(moe(x), mean)


@pytest.mark.parametrize(
    "n_experts, top_k, normalize",
    [(4, 1, None), (4, 1, True), (4, 2, None), (4, 2, False), (5, 3, None), (3, 3, None), (1, 1, None)],
)
def test_dispatch_equals_a_loop_over_tokens(n_experts, top_k, normalize):
    moe = layer(n_experts, top_k, normalize_gates=normalize)
    x = tokens(3, 7)
    assert_close(moe(x), naive_moe(moe, x))


def test_dispatch_in_float64_is_exact_to_float64_precision():
    moe = layer(4, 2).double()
    x = tokens(2, 9).double()
    assert_close(moe(x), naive_moe(moe, x), atol=1e-12, rtol=1e-12)


def test_experts_see_only_their_own_tokens():
    moe = layer(4, 1)
    seen = {e: 0 for e in range(4)}
    for e, expert in enumerate(moe.experts):
        expert.register_forward_hook(lambda mod, inp, out, e=e: seen.__setitem__(e, seen[e] + inp[0].shape[0]))
    x = tokens(4, 6)
    moe(x)
    counts = torch.bincount(moe.routing.expert_index.flatten(), minlength=4)
    assert [seen[e] for e in range(4)] == counts.tolist()
    assert sum(seen.values()) == 24  # each token ran through exactly one expert, not all four


# ----------------------------------------------------------------------------- gates
@pytest.mark.parametrize("top_k", [2, 3, 4])
def test_gates_sum_to_one_for_top_k_at_least_two(top_k):
    probs, gates, index = route_top_k(torch.randn(10, 4), top_k)
    assert_close(gates.sum(-1), torch.ones(10))
    assert_close(probs.sum(-1), torch.ones(10))
    assert (gates[:, :-1] >= gates[:, 1:]).all()  # best first
    assert_close(torch.gather(probs, -1, index) / torch.gather(probs, -1, index).sum(-1, keepdim=True), gates)


def test_top_one_keeps_the_probability_as_gate_unless_asked():
    logits = torch.randn(10, 4)
    probs, gates, index = route_top_k(logits, 1)
    assert_close(gates[:, 0], probs.max(-1).values)
    assert (gates < 1).all()
    _, gates_n, _ = route_top_k(logits, 1, normalize=True)
    assert_close(gates_n, torch.ones(10, 1))
    assert torch.equal(index[:, 0], logits.argmax(-1))


def test_renormalised_top_k_gates_are_a_softmax_over_the_top_k_logits():
    """Mixtral writes softmax(top-k logits); GShard renormalises the top-k probabilities: the same."""
    logits = torch.randn(6, 8)
    _, gates, index = route_top_k(logits, 2)
    assert_close(gates, torch.softmax(torch.gather(logits, -1, index), dim=-1))


def test_half_precision_logits_are_routed_in_float32():
    probs, gates, _ = route_top_k(torch.randn(5, 4).bfloat16(), 2)
    assert probs.dtype == gates.dtype == torch.float32


# ----------------------------------------------------------------------------- the balance loss
def test_balance_loss_is_one_for_perfectly_even_routing():
    # 4 tokens, 4 experts: each token sure of a different expert -> f = P = 1/4 for every expert
    probs = torch.full((4, 4), 0.1) + 0.6 * torch.eye(4)
    index = probs.argmax(-1, keepdim=True)
    assert_close(load_balancing_loss(probs, index), torch.tensor(1.0))
    # and top-2 with every pair used equally often
    index2 = torch.tensor([[0, 1], [2, 3], [1, 0], [3, 2]])
    assert_close(load_balancing_loss(torch.full((4, 4), 0.25), index2), torch.tensor(1.0))


def test_balance_loss_grows_as_routing_collapses():
    E, N, sure = 4, 8, 0.97
    values = []
    for moved in range(0, N + 1, 2):  # send ever more tokens to expert 0, each sure of its expert
        expert = torch.arange(N) % E
        expert[:moved] = 0
        probs = torch.full((N, E), (1 - sure) / (E - 1))
        probs[torch.arange(N), expert] = sure
        values.append(float(load_balancing_loss(probs, expert[:, None])))
    assert values[0] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
    assert values[-1] == pytest.approx(E * sure)  # everything on one expert: close to n_experts


def test_balance_loss_by_hand():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
    index = probs.argmax(-1, keepdim=True)  # experts 0, 0, 2, 0
    f = torch.tensor([3, 0, 1]) / 4
    P = probs.mean(0)
    assert_close(load_balancing_loss(probs, index), 3 * (f * P).sum())


def test_balance_loss_gradient_lowers_the_busiest_experts_probability():
    logits = torch.zeros(8, 4, requires_grad=True)
    with torch.no_grad():
        logits[:6, 0] = 2.0  # six of eight tokens prefer expert 0
    probs = logits.softmax(-1)
    load_balancing_loss(probs, probs.argmax(-1, keepdim=True)).backward()
    assert (logits.grad[:6, 0] > 0).all()  # gradient descent pushes expert 0's logits down


def test_router_z_loss():
    logits = torch.randn(5, 4)
    assert_close(router_z_loss(logits), torch.logsumexp(logits, -1).pow(2).mean())
    assert router_z_loss(logits * 10) > router_z_loss(logits)


def test_aux_loss_applies_the_coefficients():
    moe = layer(4, 2, balance_loss_coef=0.5, z_loss_coef=0.25)
    x = tokens(3, 5)
    moe(x)
    r = moe.routing
    assert float(moe.aux_loss.detach()) == pytest.approx(0.5 * r.balance_loss + 0.25 * r.z_loss, rel=1e-6)
    probs = torch.softmax(moe.router(x.reshape(-1, D)), -1).detach()
    assert r.balance_loss == pytest.approx(float(load_balancing_loss(probs, probs.topk(2).indices)), rel=1e-6)


# ----------------------------------------------------------------------------- capacity
def test_expert_capacity():
    assert expert_capacity(100, 4, 1, 1.0) == 25
    assert expert_capacity(100, 4, 2, 1.25) == 63
    assert expert_capacity(10, 3, 1, 1.0) == 4


def naive_capacity_moe(moe: MoEFeedForward, x: torch.Tensor, capacity: int) -> tuple[torch.Tensor, int]:
    """First choices of all tokens in order, then second choices; an expert past capacity drops them."""
    flat = x.reshape(-1, D)
    probs, gates, index = route_top_k(moe.router(flat), moe.top_k, moe.normalize_gates)
    out, used, dropped = torch.zeros_like(flat), [0] * moe.n_experts, 0
    for slot in range(moe.top_k):
        for t in range(flat.shape[0]):
            e = int(index[t, slot])
            if used[e] >= capacity:
                dropped += 1
                continue
            used[e] += 1
            out[t] += gates[t, slot] * moe.experts[e](flat[t])
    return out.reshape(x.shape), dropped


@pytest.mark.parametrize("top_k, factor", [(1, 0.5), (1, 1.0), (2, 0.75), (2, 1.0), (1, 10.0)])
def test_capacity_drops_the_overflow_and_counts_it(top_k, factor):
    moe = layer(4, top_k, capacity_factor=factor)
    with torch.no_grad():
        moe.router.weight[0] += 1.5  # lean towards expert 0, so that it overflows
    x = tokens(2, 10)
    y = moe(x)
    cap = expert_capacity(20, 4, top_k, factor)
    want, dropped = naive_capacity_moe(moe, x, cap)
    assert_close(y, want)
    r = moe.routing
    assert r.capacity == cap and r.dropped == dropped
    assert (r.load <= cap).all() and int(r.load.sum()) + r.dropped == 20 * top_k
    assert torch.equal(r.load, r.tokens_per_expert.clamp(max=cap))
    if factor == 10.0:
        assert r.dropped == 0
        assert_close(y, naive_moe(moe, x))


def test_a_token_dropped_by_every_expert_gets_zero():
    moe = layer(2, 1, capacity_factor=0.1)  # capacity 1 of 10 tokens
    x = tokens(10)
    y = moe(x)
    assert moe.routing.dropped == 10 - int((moe.routing.load > 0).sum())
    assert int((y.abs().sum(-1) == 0).sum()) == moe.routing.dropped


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("top_k", [1, 2])
def test_gradients_reach_the_router_from_the_output_alone(top_k):
    moe = layer(4, top_k, balance_loss_coef=0.0)
    x = tokens(3, 5)
    moe(x).pow(2).sum().backward()
    assert moe.router.weight.grad is not None and moe.router.weight.grad.abs().sum() > 0
    used = set(moe.routing.expert_index.flatten().tolist())
    for e, expert in enumerate(moe.experts):
        g = expert.fc1.weight.grad
        assert (g is not None and g.abs().sum() > 0) == (e in used)


def test_gradients_reach_the_router_from_the_balance_loss():
    moe = layer(4, 1)
    moe(tokens(3, 5))
    moe.aux_loss.backward()
    assert moe.router.weight.grad.abs().sum() > 0
    assert all(e.fc1.weight.grad is None for e in moe.experts)


def test_renormalised_top_one_cuts_the_router_off():
    """Why Switch keeps the raw probability: a renormalised single gate is 1 and has no gradient."""
    grads = {}
    for normalize in (False, True):
        moe = layer(4, 1, normalize_gates=normalize, balance_loss_coef=0.0)
        moe(tokens(3, 5)).pow(2).sum().backward()
        grads[normalize] = moe.router.weight.grad.abs().max().item()
    assert grads[False] > 1e-2
    assert grads[True] < 1e-6  # d(p / p)/dp = 0: only rounding noise is left


def test_bf16_autocast_runs():
    moe = layer(4, 2)
    x = tokens(2, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = moe(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert_close(y.float(), moe(x), atol=0.05, rtol=0.05)


# ----------------------------------------------------------------------------- routing record
def test_routing_record():
    moe = layer(4, 2)
    x = tokens(3, 5)
    moe(x)
    r = moe.routing
    assert r.expert_index.shape == r.gates.shape == (3, 5, 2)
    assert r.router_probs.shape == (3, 5, 4)
    assert not r.gates.requires_grad and not r.router_probs.requires_grad
    assert int(r.load.sum()) == 30 and r.dropped == 0 and r.capacity is None
    assert torch.equal(r.load, torch.bincount(r.expert_index.flatten(), minlength=4))
    assert_close(r.load_fraction.sum(), torch.tensor(1.0))
    assert (r.expert_index[..., 0] != r.expert_index[..., 1]).all()


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"n_experts": 0}, "n_experts must be a positive int"),
        ({"n_experts": 2.0}, "n_experts must be a positive int"),
        ({"n_experts": True}, "n_experts must be a positive int"),
        ({"top_k": 0}, "top_k must be a positive int"),
        ({"n_experts": 2, "top_k": 3}, "top_k=3 exceeds n_experts=2"),
        ({"capacity_factor": 0}, "capacity_factor must be a number > 0"),
        ({"capacity_factor": float("nan")}, "capacity_factor"),
        ({"balance_loss_coef": -0.1}, "balance_loss_coef must be a finite number >= 0"),
        ({"z_loss_coef": float("inf")}, "z_loss_coef"),
        ({"activation": "tanh"}, "activation must be one of"),
        ({"d_ff": 0}, "d_ff must be a positive int"),
    ],
)
def test_bad_layer_arguments(kwargs, words):
    args = {"d_model": D, "d_ff": FF, "n_experts": 4, "top_k": 1, **kwargs}
    with pytest.raises(ValueError, match=words):
        MoEFeedForward(**args)


def test_bad_layer_input():
    moe = layer(4, 1)
    with pytest.raises(ValueError, match="d_model=16"):
        moe(torch.randn(2, 3, D + 1))
    with pytest.raises(TypeError, match="floating-point"):
        moe(torch.ones(2, D, dtype=torch.long))
    with pytest.raises(ValueError, match="no tokens"):
        moe(torch.randn(0, D))
    with pytest.raises(TypeError, match="normalize_gates"):
        MoEFeedForward(D, FF, 4, 1, normalize_gates="yes")
    with pytest.raises(ValueError, match="top_k=5 exceeds n_experts=4"):
        route_top_k(torch.randn(3, 4), 5)
    with pytest.raises(TypeError, match="floating-point"):
        route_top_k(torch.ones(3, 4, dtype=torch.long), 1)


# ----------------------------------------------------------------------------- the MoE GPT
V, CTX = 40, 16


def moe_gpt(**overrides) -> MoEGPT:
    torch.manual_seed(0)
    return MoEGPT(MoEGPTConfig(**{"vocab_size": V, "context_length": CTX, "n_layer": 2, "n_head": 4,
                                  "d_model": 32, "d_ff": 48, **overrides}))


def ids(B=2, T=10, seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def test_moe_gpt_config_round_trip_and_errors():
    cfg = MoEGPTConfig(vocab_size=V, context_length=CTX, n_experts=8, expert_top_k=2, capacity_factor=1.25)
    assert MoEGPTConfig.from_dict(cfg.to_dict()) == cfg
    assert isinstance(MoEGPTConfig.tiny(n_experts=2), MoEGPTConfig)
    with pytest.raises(ValueError, match="top_k=3 exceeds n_experts=2"):
        MoEGPTConfig(vocab_size=V, context_length=CTX, n_experts=2, expert_top_k=3)
    with pytest.raises(ValueError, match="n_experts must be a positive int"):
        MoEGPTConfig(vocab_size=V, context_length=CTX, n_experts=0)
    with pytest.raises(ValueError, match="d_model=30 is not divisible"):  # GPTConfig's own checks still run
        MoEGPTConfig(vocab_size=V, context_length=CTX, d_model=30, n_head=4)
    with pytest.raises(TypeError, match="MoEGPT needs a MoEGPTConfig"):
        MoEGPT(GPTConfig(vocab_size=V, context_length=CTX))


def test_moe_gpt_with_one_expert_is_the_dense_gpt():
    moe = moe_gpt(n_experts=1, expert_top_k=1).eval()
    dense = GPT(GPTConfig(vocab_size=V, context_length=CTX, n_layer=2, n_head=4, d_model=32, d_ff=48)).eval()
    state = {k.replace("mlp.experts.0.", "mlp."): v for k, v in moe.state_dict().items() if "router" not in k}
    dense.load_state_dict(state)
    x = ids()
    assert_close(moe(x), dense(x))
    assert moe.num_active_parameters() == dense.num_parameters() + 2 * 32  # plus two 32 -> 1 routers


def test_moe_gpt_parameters_total_and_active():
    moe = moe_gpt(n_experts=4, expert_top_k=1)
    dense = GPT(GPTConfig(vocab_size=V, context_length=CTX, n_layer=2, n_head=4, d_model=32, d_ff=48))
    expert = 32 * 48 + 48 + 48 * 32 + 32
    router = 32 * 4
    assert moe.num_parameters() == dense.num_parameters() + 2 * (3 * expert + router)
    assert moe.num_active_parameters() == dense.num_parameters() + 2 * router
    assert moe_gpt(n_experts=4, expert_top_k=2).num_active_parameters() == dense.num_parameters() + 2 * (expert + router)
    assert moe.lm_head.weight is moe.tok_emb.weight


def test_moe_gpt_init_scales_every_experts_output_projection():
    moe = moe_gpt(n_layer=4, n_experts=3)
    want = 0.02 / math.sqrt(8)
    for layer_ in moe.moe_layers():
        for expert in layer_.experts:
            assert expert.fc2.weight.std().item() == pytest.approx(want, rel=0.15)
            assert expert.fc1.weight.std().item() == pytest.approx(0.02, rel=0.15)


def test_moe_gpt_forward_routing_and_generation():
    moe = moe_gpt(n_experts=4, expert_top_k=2).eval()
    x = ids(3, 9)
    logits = moe(x)
    assert logits.shape == (3, 9, V)
    records = moe.routing()
    assert len(records) == 2 and records[0].expert_index.shape == (3, 9, 2)
    assert float(moe.aux_loss().detach()) == pytest.approx(sum(0.01 * r.balance_loss for r in records), rel=1e-6)
    g = torch.Generator().manual_seed(0)
    cached = moe.generate(x[:, :4], 8, use_cache=True, generator=g)
    g = torch.Generator().manual_seed(0)
    uncached = moe.generate(x[:, :4], 8, use_cache=False, generator=g)
    assert torch.equal(cached, uncached)


def test_moe_gpt_routing_before_a_forward_raises():
    with pytest.raises(RuntimeError, match="run the model"):
        moe_gpt().routing()
    with pytest.raises(RuntimeError, match="run the model"):
        moe_aux_loss(moe_gpt())


def test_moe_aux_loss_of_a_dense_model_is_zero():
    dense = GPT(GPTConfig(vocab_size=V, context_length=CTX, n_layer=1, n_head=2, d_model=8))
    assert float(moe_aux_loss(dense).detach()) == 0.0


def test_loss_fn_adds_the_aux_loss_in_training_only():
    moe = moe_gpt(n_experts=4)
    x, y = ids(seed=1), ids(seed=2)
    moe.train()
    with_aux = moe_language_model_loss(moe, (x, y))
    ce = F.cross_entropy(moe(x).flatten(0, 1), y.flatten())
    assert_close(with_aux, ce + moe.aux_loss())
    assert float(moe.aux_loss().detach()) > 0
    moe.eval()
    assert_close(moe_language_model_loss(moe, (x, y)), moe.loss(x, y))


def test_trainer_trains_an_moe_gpt_with_the_aux_loss():
    text = torch.arange(400) % 13 + (torch.arange(400) // 13) % 3  # a pattern a tiny model can learn
    train_ids, val_ids = text[:320], text[320:]
    model = moe_gpt(n_experts=4, vocab_size=16, n_layer=1, d_model=32, d_ff=32)
    calls = []

    def loss_fn(m, batch):
        loss = moe_language_model_loss(m, batch)
        calls.append(m.training)
        return loss

    trainer = Trainer(model, train_ids, val_ids,
                      TrainConfig(max_steps=40, batch_size=8, lr=3e-3, warmup_steps=5, eval_interval=40,
                                  eval_steps=2, progress=False, context_length=CTX),
                      loss_fn=loss_fn)
    before = trainer.evaluate()
    router_before = model.blocks[0].mlp.router.weight.detach().clone()
    history = trainer.fit()
    assert history[-1]["val_loss"] < before - 0.5
    assert not torch.equal(model.blocks[0].mlp.router.weight, router_before)  # the router learned too
    assert True in calls and False in calls  # trained with the aux loss, evaluated without
