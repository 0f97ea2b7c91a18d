"""Mixture of experts: a feed-forward layer in which each token uses only a few of many experts
(chapter 15).

A dense Transformer runs every token through the same feed-forward network. A *mixture of experts*
(MoE) layer holds ``n_experts`` feed-forward networks and a small linear **router** that picks
``top_k`` of them per token (Shazeer et al., 2017, "Outrageously large neural networks"). Parameters
grow with ``n_experts``; the work per token grows only with ``top_k``.

What a reader should notice:

* **Gates.** The router's softmax gives each token a probability per expert; the ``top_k`` largest
  are kept. With ``top_k = 1`` the chosen expert's output is scaled by its probability ``p`` (the
  Switch Transformer, Fedus et al., 2021): renormalising a single gate would make it exactly 1 and
  cut the router off from the language-model loss. With ``top_k >= 2`` the chosen probabilities are
  renormalised to sum to 1 (GShard, Lepikhin et al., 2020; Mixtral, Jiang et al., 2024, whose softmax
  over the top-k logits is the same thing). ``normalize_gates`` overrides either default.
* **Dispatch by index.** Tokens are sorted by expert; each expert runs once, on its own tokens only
  (a gather), and the gated outputs are added back in place (``index_add_``, a scatter). No expert
  ever sees a token that was not routed to it.
* **Capacity.** With ``capacity_factor`` set, an expert takes at most
  ``ceil(capacity_factor * top_k * N / n_experts)`` of a batch's ``N`` tokens (Switch, GShard). First
  choices take precedence over second choices, earlier tokens over later ones; an overflowing
  assignment is dropped (the token's residual stream carries it past the layer) and counted.
* **Load balancing.** Left alone, a router tends to favour a few experts. The Switch Transformer's
  auxiliary loss ``n_experts * sum_i f_i * P_i`` (``f_i`` the fraction of assignments sent to expert
  ``i``, ``P_i`` its mean router probability) is 1 for perfectly even routing and up to
  ``n_experts`` when everything goes to one expert. ST-MoE's router z-loss (Zoph et al., 2022),
  the mean squared log-sum-exp of the router logits, keeps those logits small.

After every forward an :class:`MoEFeedForward` keeps its auxiliary losses (``aux_loss``, with
gradients) and a detached :class:`Routing` record (which experts each token went to, the load per
expert, what was dropped) for plots. :class:`MoEGPT` is the package's GPT with an MoE layer in place
of every feed-forward network; train it with ``loss_fn=moe_language_model_loss`` so that the
:class:`~transformer_core.training.Trainer` adds the auxiliary losses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .gpt import GPT, GPTConfig
from .layers import FeedForward
from .validation import check_int, check_number

__all__ = [
    "Routing",
    "MoEFeedForward",
    "MoEGPTConfig",
    "MoEGPT",
    "route_top_k",
    "load_balancing_loss",
    "router_z_loss",
    "expert_capacity",
    "moe_aux_loss",
    "moe_language_model_loss",
]


# --------------------------------------------------------------------------- checks
def _check_moe_args(n_experts: object, top_k: object, capacity_factor: object = None,
                    normalize_gates: object = None, **coefs: object) -> None:
    check_int("n_experts", n_experts)
    check_int("top_k", top_k)
    if top_k > n_experts:  # type: ignore[operator]
        raise ValueError(
            f"top_k={top_k} exceeds n_experts={n_experts}: a token cannot use more experts than there "
            f"are; choose top_k between 1 and {n_experts}"
        )
    if capacity_factor is not None and (check_number("capacity_factor", capacity_factor) <= 0):
        raise ValueError(f"capacity_factor must be a number > 0 or None (no limit), got {capacity_factor!r}")
    if normalize_gates is not None and not isinstance(normalize_gates, bool):
        raise TypeError(f"normalize_gates must be True, False or None (by top_k), got {normalize_gates!r}")
    for name, value in coefs.items():  # the auxiliary losses' weights: 0 turns a loss off
        check_number(name, value, minimum=0)


# --------------------------------------------------------------------------- the pieces, as functions
def route_top_k(
    router_logits: Tensor, top_k: int, normalize: bool | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Softmax over experts, then the ``top_k`` best experts per token.

    ``router_logits`` ``(..., E)`` -> ``(probs (..., E), gates (..., k), expert_index (..., k))``;
    experts are listed best first. ``normalize=None`` renormalises the gates for ``top_k >= 2``
    (GShard, Mixtral) and keeps the raw probability for ``top_k = 1`` (Switch).
    Half-precision logits are routed in float32: rounding would otherwise decide close calls.
    """
    if not isinstance(router_logits, Tensor) or router_logits.dim() < 1 or not router_logits.is_floating_point():
        raise TypeError("router_logits must be a floating-point tensor of shape (..., n_experts)")
    n_experts = router_logits.shape[-1]
    _check_moe_args(n_experts, top_k)
    logits = router_logits.float() if router_logits.dtype in (torch.float16, torch.bfloat16) else router_logits
    probs = logits.softmax(dim=-1)  # (..., E)
    top_p, expert_index = probs.topk(top_k, dim=-1)  # (..., k), sorted best first
    if normalize if normalize is not None else top_k > 1:
        gates = top_p / top_p.sum(dim=-1, keepdim=True)  # the k chosen gates sum to 1
    else:
        gates = top_p
    return probs, gates, expert_index


def load_balancing_loss(router_probs: Tensor, expert_index: Tensor, n_experts: int | None = None) -> Tensor:
    """The Switch Transformer's auxiliary loss ``N_experts * sum_i f_i * P_i`` (Fedus et al., eq. 4).

    ``router_probs`` ``(N, E)`` (any leading axes are flattened) and ``expert_index`` ``(N, k)``, the
    experts each token was sent to. ``f_i`` is the fraction of the ``N * k`` assignments that chose
    expert ``i`` (a count: no gradient), ``P_i`` the mean probability the router gives expert ``i``
    (differentiable). Perfectly even routing gives 1; everything on one expert with probability near
    1 gives ``n_experts``. The gradient pushes down the probability of the experts that get the most
    tokens.
    """
    E = router_probs.shape[-1] if n_experts is None else n_experts
    if router_probs.shape[-1] != E:
        raise ValueError(f"router_probs has {router_probs.shape[-1]} experts on its last axis, n_experts is {E}")
    probs = router_probs.reshape(-1, E)  # (N, E)
    index = expert_index.reshape(probs.shape[0], -1)  # (N, k)
    if probs.shape[0] == 0:
        raise ValueError("load_balancing_loss needs at least one token")
    f = torch.bincount(index.flatten(), minlength=E).to(probs.dtype) / index.numel()  # (E,) sums to 1
    P = probs.mean(dim=0)  # (E,) sums to 1
    return E * (f * P).sum()


def router_z_loss(router_logits: Tensor) -> Tensor:
    """ST-MoE's router z-loss: the mean over tokens of ``logsumexp(logits)**2`` (Zoph et al., 2022).

    It penalises large router logits, whose softmax saturates and whose rounding errors in low
    precision can flip which expert wins.
    """
    logits = router_logits.float() if router_logits.dtype in (torch.float16, torch.bfloat16) else router_logits
    return torch.logsumexp(logits, dim=-1).pow(2).mean()


def expert_capacity(n_tokens: int, n_experts: int, top_k: int, capacity_factor: float) -> int:
    """How many assignments one expert may take: ``ceil(capacity_factor * top_k * n_tokens / n_experts)``.

    A capacity factor of 1 leaves room for exactly even routing; above 1 is slack for imbalance.
    """
    _check_moe_args(n_experts, top_k, capacity_factor)
    return math.ceil(capacity_factor * top_k * n_tokens / n_experts)


# --------------------------------------------------------------------------- the layer
@dataclass
class Routing:
    """What the router did in the last forward (all detached, on the layer's device).

    ``expert_index`` and ``gates`` have the input's leading shape plus ``k`` (best expert first);
    ``router_probs`` plus ``E``. ``tokens_per_expert`` counts assignments before the capacity limit,
    ``load`` those each expert processed; ``dropped`` = their difference, summed.
    """

    expert_index: Tensor
    gates: Tensor
    router_probs: Tensor
    tokens_per_expert: Tensor
    load: Tensor
    dropped: int
    capacity: int | None
    balance_loss: float
    z_loss: float

    @property
    def load_fraction(self) -> Tensor:
        """The share of the processed assignments each expert took, ``(E,)``, summing to 1."""
        return self.load.float() / self.load.sum().clamp(min=1)


class MoEFeedForward(nn.Module):
    """A mixture of ``n_experts`` :class:`~transformer_core.layers.FeedForward` networks, ``top_k`` per token.

    ``x`` ``(..., D)`` -> ``(..., D)``, like a ``FeedForward``. The router is ``nn.Linear(D, E, bias=False)``;
    its outputs are the experts' logits. After a forward, ``aux_loss`` holds
    ``balance_loss_coef * balance + z_loss_coef * z`` (a scalar with gradients: add it to the training
    loss) and ``routing`` a :class:`Routing` record.

    With one expert and ``top_k = 1`` the layer *is* that expert (its gate is 1).
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        n_experts: int,
        top_k: int = 1,
        activation: str = "gelu",
        dropout: float = 0.0,
        bias: bool = True,
        capacity_factor: float | None = None,
        normalize_gates: bool | None = None,
        balance_loss_coef: float = 0.01,
        z_loss_coef: float = 0.0,
    ) -> None:
        super().__init__()
        check_int("d_model", d_model)
        check_int("d_ff", d_ff)
        _check_moe_args(n_experts, top_k, capacity_factor, normalize_gates,
                        balance_loss_coef=balance_loss_coef, z_loss_coef=z_loss_coef)
        self.d_model, self.n_experts, self.top_k = d_model, n_experts, top_k
        self.capacity_factor = capacity_factor
        self.normalize_gates = normalize_gates
        self.balance_loss_coef, self.z_loss_coef = balance_loss_coef, z_loss_coef
        self.router = nn.Linear(d_model, n_experts, bias=False)  # one logit per expert
        self.experts = nn.ModuleList(FeedForward(d_model, d_ff, activation, dropout, bias) for _ in range(n_experts))
        self.aux_loss: Tensor | None = None
        self.routing: Routing | None = None

    def extra_repr(self) -> str:
        return f"n_experts={self.n_experts}, top_k={self.top_k}, capacity_factor={self.capacity_factor}"

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"MoEFeedForward takes a floating-point tensor (..., {self.d_model})")
        if x.dim() < 1 or x.shape[-1] != self.d_model:
            raise ValueError(f"input's last axis must be d_model={self.d_model}, got shape {tuple(x.shape)}")
        lead, k, E = x.shape[:-1], self.top_k, self.n_experts
        flat = x.reshape(-1, self.d_model)  # (N, D): every position of every sequence is one token
        N = flat.shape[0]
        if N == 0:
            raise ValueError("MoEFeedForward got no tokens (an empty batch)")
        logits = self.router(flat)  # (N, E)
        probs, gates, expert_index = route_top_k(logits, k, self.normalize_gates)  # (N, E), (N, k), (N, k)

        # Dispatch. Assignments are listed slot-major (every token's first choice, then every second
        # choice), so a stable sort by expert keeps first choices ahead when an expert is full.
        expert_of = expert_index.t().reshape(-1)  # (k·N,)
        token_of = torch.arange(N, device=x.device).repeat(k)  # (k·N,)
        gate_of = gates.t().reshape(-1).to(x.dtype)  # (k·N,)
        order = torch.argsort(expert_of, stable=True)  # assignments grouped by expert
        tokens_per_expert = torch.bincount(expert_of, minlength=E)  # (E,)
        capacity = None if self.capacity_factor is None else expert_capacity(N, E, k, self.capacity_factor)

        out = torch.zeros_like(flat)  # (N, D); a dropped assignment adds nothing
        load = torch.zeros_like(tokens_per_expert)
        start = 0
        for e, count in enumerate(tokens_per_expert.tolist()):
            chosen = order[start:start + count]  # this expert's assignments, first choices first
            start += count
            if capacity is not None:
                chosen = chosen[:capacity]
            load[e] = chosen.numel()
            if chosen.numel() == 0:
                continue
            tokens = token_of[chosen]  # (n_e,) which tokens
            y = self.experts[e](flat[tokens])  # (n_e, D): gather, then the expert on its tokens only
            out.index_add_(0, tokens, (y * gate_of[chosen, None]).to(out.dtype))  # scatter back, gated

        balance = load_balancing_loss(probs, expert_index, E)
        z = router_z_loss(logits)
        self.aux_loss = self.balance_loss_coef * balance + self.z_loss_coef * z
        self.routing = Routing(
            expert_index=expert_index.detach().reshape(*lead, k),
            gates=gates.detach().reshape(*lead, k),
            router_probs=probs.detach().reshape(*lead, E),
            tokens_per_expert=tokens_per_expert,
            load=load,
            dropped=int(tokens_per_expert.sum() - load.sum()),
            capacity=capacity,
            balance_loss=float(balance.detach()),
            z_loss=float(z.detach()),
        )
        return out.reshape(x.shape)


# --------------------------------------------------------------------------- in a GPT
@dataclass
class MoEGPTConfig(GPTConfig):
    """A :class:`~transformer_core.gpt.GPTConfig` whose blocks use :class:`MoEFeedForward` layers.

    Each expert is a feed-forward network of width ``d_ff``; a token uses ``expert_top_k`` of the
    ``n_experts``. ``balance_loss_coef`` defaults to the Switch Transformer's 0.01; ST-MoE used
    ``z_loss_coef = 0.001``.
    """

    n_experts: int = 4
    expert_top_k: int = 1
    capacity_factor: float | None = None
    normalize_gates: bool | None = None
    balance_loss_coef: float = 0.01
    z_loss_coef: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_moe_args(self.n_experts, self.expert_top_k, self.capacity_factor, self.normalize_gates,
                        balance_loss_coef=self.balance_loss_coef, z_loss_coef=self.z_loss_coef)


class MoEGPT(GPT):
    """The package's :class:`~transformer_core.gpt.GPT` with a mixture of experts in every block.

    Everything else (attention, embeddings, tied head, ``generate``) is GPT's. The language-model
    loss ``model.loss(idx, targets)`` is the plain cross-entropy; after a forward, :meth:`aux_loss`
    sums the layers' auxiliary losses and :meth:`routing` returns each layer's :class:`Routing`.
    Train with ``Trainer(..., loss_fn=moe_language_model_loss)``.
    """

    config_class = MoEGPTConfig

    def feed_forward(self) -> MoEFeedForward:
        """A mixture of experts in every block's feed-forward place; everything else is GPT's.

        GPT's initialisation covers it: every expert's output projection is scaled like a dense
        block's ``fc2``, and the router starts at N(0, 0.02), nearly even.
        """
        c = self.config
        return MoEFeedForward(
            c.d_model, c.d_ff, c.n_experts, c.expert_top_k, c.activation, c.dropout, c.bias,
            c.capacity_factor, c.normalize_gates, c.balance_loss_coef, c.z_loss_coef,
        )

    def moe_layers(self) -> list[MoEFeedForward]:
        return [b.mlp for b in self.blocks if isinstance(b.mlp, MoEFeedForward)]

    def num_active_parameters(self, non_embedding: bool = False) -> int:
        """Parameters one token uses: all but the ``n_experts - top_k`` experts it skips in each layer."""
        skipped = 0
        for layer in self.moe_layers():
            per_expert = sum(p.numel() for p in layer.experts[0].parameters())
            skipped += (layer.n_experts - layer.top_k) * per_expert
        return self.num_parameters(non_embedding) - skipped

    def aux_loss(self) -> Tensor:
        """The sum of every layer's auxiliary loss from the last forward (coefficients applied)."""
        return moe_aux_loss(self)

    def routing(self) -> list[Routing]:
        """Each layer's :class:`Routing` from the last forward."""
        records = [layer.routing for layer in self.moe_layers()]
        if any(r is None for r in records):
            raise RuntimeError("no routing yet: run the model on a batch first")
        return records  # type: ignore[return-value]


def moe_aux_loss(model: nn.Module) -> Tensor:
    """Sum the ``aux_loss`` of every :class:`MoEFeedForward` in ``model`` (from its last forward).

    A model without MoE layers gives 0. Raises ``RuntimeError`` if an MoE layer has not run yet.
    """
    total: Tensor | None = None
    for module in model.modules():
        if isinstance(module, MoEFeedForward):
            if module.aux_loss is None:
                raise RuntimeError("an MoE layer has no auxiliary loss yet: run the model on a batch first")
            total = module.aux_loss if total is None else total + module.aux_loss
    if total is None:
        p = next(model.parameters(), None)
        return torch.zeros((), device=p.device if p is not None else None)
    return total


def moe_language_model_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """Next-token cross-entropy, plus the MoE layers' auxiliary losses while the model trains.

    A ``loss_fn`` for :class:`~transformer_core.training.Trainer`. In eval mode (the trainer's
    validation) it is the cross-entropy alone, so validation losses compare with a dense model's.
    """
    x, y = batch
    logits = model(x)  # (B, T, V); every MoE layer has just stored its aux_loss
    loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
    if model.training:
        loss = loss + moe_aux_loss(model)
    return loss
