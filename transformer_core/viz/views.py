"""Attention views a reader can touch: a token view and a layer x head grid, hover for numbers.

Both are `anywidget <https://anywidget.dev>`_ widgets: the attention travels in the widget's
state (weights quantised to 8 bits, a 2-layer x 4-head x 64-token view is about 50 kB) and the
front-end (``views.js``, ``views.css`` beside this file, plain DOM and canvas) travels with it.
So a view works live in JupyterLab, Notebook 7, VS Code and Colab, and, with no kernel at all,
on a static page that holds the notebook's widget state (the book site serves anywidget's
front-end module from its own files).

* :class:`TokenView` (the job of bertviz's head view): the tokens twice, queries on the left and
  keys on the right, a line from each query to each key as strong as its weight; hover or click
  a token for its row (a query) or column (a key) with the numbers; layer and heads chosen in the
  view, several heads at once in their own colours (each head's lines a few pixels apart from
  the others', so that no head's line hides another's).
* :class:`GridView` (the job of bertviz's model view): every layer x head as a small heatmap,
  hover for query, key and weight, click to open that head large, next to its token view; a head
  score of :mod:`transformer_core.interpret` (entropy, previous-token, induction) colours or
  orders the grid.

An encoder-decoder's attention comes in three parts, each with its own tokens on each side:
encoder self-attention (source x source), decoder self-attention (target x target) and
cross-attention (target queries x source keys); the view switches between them.

Inputs: weights shaped ``(layers, heads, queries, keys)`` (or a model's ``(layers, batch, heads,
queries, keys)``, or a list of per-layer tensors as Hugging Face's ``output_attentions`` gives);
a mapping of parts (``{"encoder": ..., "decoder": ..., "cross": ...}``, the book's
``TransformerAttention``); :meth:`TokenView.from_model` for any model of the book (GPT, BERT,
the encoder-decoder ``Transformer``) and :meth:`TokenView.from_hf` for a Hugging Face output.

Long inputs stay usable: the token view scrolls (a redraw keeps the scroll position, a hovered
token past the first screenful still answers), the grid's thumbnails shrink each head to a fixed
size, the large heatmap scrolls. Nothing is cut.

Where no widget can be drawn (a notebook viewer, a notebook opened without its widget state) the
output shows a PNG of the grid instead, made here with numpy and zlib (no matplotlib).
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets

from ._inputs import as_tokens, attention_stack

_HERE = Path(__file__).resolve().parent

#: the score names a view may show, in the order of its menu
SCORE_NAMES = ("entropy", "previous-token", "induction")

#: the parts of an encoder-decoder, by the names the book's and Hugging Face's outputs use:
#: name -> (label, query side, key side); "source"/"target" are the two token sequences
_KNOWN_PARTS = {
    "encoder": ("encoder self-attention", "source", "source"),
    "encoder_attentions": ("encoder self-attention", "source", "source"),
    "decoder": ("decoder self-attention", "target", "target"),
    "decoder_attentions": ("decoder self-attention", "target", "target"),
    "cross": ("cross-attention", "target", "source"),
    "cross_attentions": ("cross-attention", "target", "source"),
}

# A few stops of matplotlib's viridis (the book's heatmap colours), interpolated to 256 levels:
# the PNG fallback and views.js draw with the same table.
_VIRIDIS_STOPS = np.array(
    [
        [68, 1, 84],
        [72, 40, 120],
        [62, 74, 137],
        [49, 104, 142],
        [38, 130, 142],
        [31, 158, 137],
        [53, 183, 121],
        [109, 205, 89],
        [180, 222, 44],
        [253, 231, 37],
    ],
    dtype=np.float64,
)


def _viridis_lut() -> np.ndarray:
    x = np.linspace(0, 1, len(_VIRIDIS_STOPS))
    t = np.linspace(0, 1, 256)
    return np.stack([np.interp(t, x, _VIRIDIS_STOPS[:, c]) for c in range(3)], 1).round().astype(
        np.uint8
    )


# --------------------------------------------------------------------------------------------------
# Normalising the inputs
# --------------------------------------------------------------------------------------------------


@dataclass
class AttentionPart:
    """One kind of attention of a model: weights (layers, heads, queries, keys) and both sides' tokens."""

    name: str
    weights: np.ndarray
    query_tokens: list[str]
    key_tokens: list[str]
    layer_names: list[str]
    scores: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.weights.shape)  # type: ignore[return-value]


def _as_weights(attn: Any, batch_index: int | None, what: str) -> np.ndarray:
    """One part's weights -> float (layers, heads, queries, keys), checked."""
    w = attention_stack(attn, batch_index, what)
    if w.dtype == bool:
        raise ValueError(f"{what} must hold attention weights (numbers), not booleans")
    lo, hi = float(w.min()), float(w.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(
            f"{what} holds values from {lo:.3g} to {hi:.3g}: attention weights lie in [0, 1] "
            "(pass the softmax's output, not the scores before it)"
        )
    return np.clip(w, 0.0, 1.0)


def _check_tokens(tokens: list[str], n: int, side: str, what: str) -> list[str]:
    if len(tokens) != n:
        raise ValueError(f"{what}: {len(tokens)} {side} tokens for {n} {side} positions")
    return tokens


def _head_scores(w: np.ndarray, half_len: int | None) -> dict[str, np.ndarray]:
    """interpret's scores of every head of one part: name -> (layers, heads)."""
    import torch

    from transformer_core import interpret

    t = torch.from_numpy(w)
    scores = {"entropy": interpret.entropy_score(t).numpy()}
    nq, nk = w.shape[-2:]
    if nq == nk and nq >= 2:
        scores["previous-token"] = interpret.previous_token_score(t).numpy()
        if half_len is not None and 1 <= half_len < nk:
            scores["induction"] = interpret.induction_score(t, half_len).numpy()
    return scores


def attention_parts(
    attn: Any,
    tokens: Any,
    target_tokens: Any = None,
    *,
    query_tokens: Any = None,
    layer_names: Sequence[str] | None = None,
    batch_index: int | None = None,
    half_len: int | None = None,
) -> list[AttentionPart]:
    """Any accepted input -> the parts a view shows (each checked against its tokens).

    ``attn`` is one part (weights, see the module's docstring; ``tokens`` label its keys and,
    unless ``query_tokens`` is given, its queries), or several: a mapping or NamedTuple of parts
    (the book's ``TransformerAttention``: ``encoder``, ``decoder``, ``cross``; Hugging Face's
    ``encoder_attentions``, ...), labelled with ``tokens`` (the source) and ``target_tokens``.
    """
    if hasattr(attn, "_asdict"):
        attn = attn._asdict()
    src = as_tokens(tokens, "tokens")
    if isinstance(attn, Mapping):
        if query_tokens is not None:
            raise ValueError("query_tokens is for one part; several parts take target_tokens")
        items = [(str(k), v) for k, v in attn.items() if v is not None]
        if not items:
            raise ValueError("attn is an empty mapping: no attention to view")
        tgt = None if target_tokens is None else as_tokens(target_tokens, "target_tokens")
        parts = []
        for key, value in items:
            w = _as_weights(value, batch_index, f"attn[{key!r}]")
            nq, nk = w.shape[-2:]
            label, q_side, k_side = _KNOWN_PARTS.get(key, (key, None, None))
            if q_side is None:  # a part of another name: tell the sides by its shape
                sides = {"source": src, "target": tgt}
                fits = [
                    (qs, ks)
                    for qs in sides
                    for ks in sides
                    if sides[qs] is not None and sides[ks] is not None
                    and (len(sides[qs]), len(sides[ks])) == (nq, nk)
                ]
                if not fits:
                    raise ValueError(
                        f"attn[{key!r}] is {nq} queries x {nk} keys, which fits neither tokens "
                        f"({len(src)}) nor target_tokens "
                        f"({'none given' if tgt is None else len(tgt)})"
                    )
                q_side, k_side = fits[0]
            if "target" in (q_side, k_side) and tgt is None:
                raise ValueError(
                    f"attn[{key!r}] ({label}) needs the target's tokens: pass target_tokens=..."
                )
            q = _check_tokens(src if q_side == "source" else tgt, nq, "query", f"attn[{key!r}]")
            k = _check_tokens(src if k_side == "source" else tgt, nk, "key", f"attn[{key!r}]")
            names = [str(i) for i in range(w.shape[0])]
            parts.append(AttentionPart(label, w, q, k, names, _head_scores(w, half_len)))
        if layer_names is not None:
            raise ValueError("layer_names is for one part; several parts are labelled 0, 1, ...")
        return parts
    if target_tokens is not None:
        raise ValueError(
            "target_tokens is for several parts (a mapping: encoder, decoder, cross); for one "
            "part of cross-attention pass query_tokens"
        )
    w = _as_weights(attn, batch_index, "attn")
    nq, nk = w.shape[-2:]
    keys = _check_tokens(src, nk, "key", "attn")
    queries = keys if query_tokens is None else as_tokens(query_tokens, "query_tokens")
    queries = _check_tokens(queries, nq, "query", "attn")
    names = [str(i) for i in range(w.shape[0])] if layer_names is None else [str(n) for n in layer_names]
    if len(names) != w.shape[0]:
        raise ValueError(f"{len(names)} layer_names for {w.shape[0]} layers")
    label = "self-attention" if query_tokens is None else "cross-attention"
    return [AttentionPart(label, w, queries, keys, names, _head_scores(w, half_len))]


# --------------------------------------------------------------------------------------------------
# What goes into the page
# --------------------------------------------------------------------------------------------------


def _encode_weights(w: np.ndarray, bits: int) -> str:
    """(layers, heads, queries, keys) in [0, 1] -> base64 of uint8 (or little-endian uint16)."""
    top = (1 << bits) - 1
    q = np.rint(w * top).astype("<u2" if bits == 16 else np.uint8)
    return base64.b64encode(np.ascontiguousarray(q).tobytes()).decode("ascii")


def _part_state(part: AttentionPart, bits: int) -> dict[str, Any]:
    n_layer, n_head, nq, nk = part.shape
    return {
        "name": part.name,
        "layers": n_layer,
        "heads": n_head,
        "queries": nq,
        "keys": nk,
        "query_tokens": part.query_tokens,
        "key_tokens": part.key_tokens,
        "layer_names": part.layer_names,
        "bits": bits,
        "data": _encode_weights(part.weights, bits),
        # three digits are all a reader reads; also keeps the state free of float noise
        "scores": {k: np.round(v, 3).tolist() for k, v in part.scores.items()},
    }


def decode_weights(part_state: Mapping[str, Any]) -> np.ndarray:
    """The weights a view's page holds for one part, back as floats (layers, heads, queries, keys)."""
    bits = int(part_state["bits"])
    raw = base64.b64decode(part_state["data"])
    q = np.frombuffer(raw, dtype="<u2" if bits == 16 else np.uint8)
    shape = tuple(int(part_state[k]) for k in ("layers", "heads", "queries", "keys"))
    return (q.astype(np.float64) / ((1 << bits) - 1)).reshape(shape)


def _png(rgb: np.ndarray) -> bytes:
    """A PNG of an (H, W, 3) uint8 image, with nothing but zlib."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def grid_png(part: AttentionPart, panel: int = 64, gap: int = 4, max_heads: int = 16) -> bytes:
    """Every layer x head of one part as small heatmaps in one PNG (the fallback image)."""
    w = part.weights[:, :max_heads]
    n_layer, n_head, nq, nk = w.shape
    scale = max(1, panel // max(nq, nk))
    ph, pw = nq * scale, nk * scale
    lut = _viridis_lut()
    img = np.full((n_layer * (ph + gap) + gap, n_head * (pw + gap) + gap, 3), 255, np.uint8)
    for li in range(n_layer):
        for h in range(n_head):
            cells = lut[np.rint(w[li, h] * 255).astype(np.uint8)]
            cells = cells.repeat(scale, 0).repeat(scale, 1)
            y, x = gap + li * (ph + gap), gap + h * (pw + gap)
            img[y : y + ph, x : x + pw] = cells
    return _png(img)


# --------------------------------------------------------------------------------------------------
# The widgets
# --------------------------------------------------------------------------------------------------


class _AttentionView(anywidget.AnyWidget):
    """What both views share: the parts, the choice of part, layer and heads, the focus."""

    _esm = (_HERE / "views.js").read_text(encoding="utf-8")
    _css = (_HERE / "views.css").read_text(encoding="utf-8")

    _kind = "token"
    #: which view the front-end draws: "token" or "grid"
    view = traitlets.Unicode("token").tag(sync=True)
    #: every part's tokens, weights (base64) and head scores (see :func:`decode_weights`)
    parts = traitlets.List().tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    #: the part, layer and heads shown (the view and Python keep these in step)
    part = traitlets.Int(0).tag(sync=True)
    layer = traitlets.Int(0).tag(sync=True)
    heads = traitlets.List(traitlets.Int(), default_value=[0]).tag(sync=True)
    #: the token a reader clicked: {"side": "query" or "key", "index": i}, or {} for none
    focus = traitlets.Dict().tag(sync=True)
    #: the grid's head score (one of SCORE_NAMES or "") and whether it orders the grid
    score = traitlets.Unicode("").tag(sync=True)
    order = traitlets.Unicode("layer").tag(sync=True)

    def __init__(
        self,
        attn: Any,
        tokens: Any,
        target_tokens: Any = None,
        *,
        query_tokens: Any = None,
        layer_names: Sequence[str] | None = None,
        batch_index: int | None = None,
        half_len: int | None = None,
        part: int | str = 0,
        layer: int = 0,
        heads: int | Sequence[int] | None = None,
        score: str = "",
        order: str = "layer",
        title: str = "",
        bits: int = 8,
        max_bytes: int = 4_000_000,
    ) -> None:
        if bits not in (8, 16):
            raise ValueError(f"bits must be 8 or 16 (weights as uint8 or uint16), got {bits!r}")
        parts = attention_parts(
            attn,
            tokens,
            target_tokens,
            query_tokens=query_tokens,
            layer_names=layer_names,
            batch_index=batch_index,
            half_len=half_len,
        )
        size = sum(p.weights.size for p in parts) * bits // 8
        if size > max_bytes:
            shapes = ", ".join(f"{p.name} {'×'.join(map(str, p.shape))}" for p in parts)
            raise ValueError(
                f"these weights ({shapes}) would put {size / 1e6:.1f} MB into the notebook, more "
                f"than max_bytes={max_bytes:,}: view fewer layers (attn[:k]) or a shorter text, "
                "or raise max_bytes"
            )
        names = [p.name for p in parts]
        if isinstance(part, str):
            if part not in names:
                raise ValueError(f"part={part!r} is not one of {names}")
            part = names.index(part)
        if not 0 <= part < len(parts):
            raise ValueError(f"part={part} is out of range for {len(parts)} parts ({names})")
        n_layer, n_head = parts[part].shape[:2]
        if not -n_layer <= layer < n_layer:
            raise ValueError(f"layer={layer} is out of range for {n_layer} layers")
        if heads is None:
            heads = list(range(n_head)) if self._kind == "token" else [0]
        elif isinstance(heads, (int, np.integer)):
            heads = [int(heads)]
        heads = [int(h) for h in heads]
        bad = [h for h in heads if not 0 <= h < n_head]
        if bad or not heads:
            raise ValueError(f"heads={heads} must be head numbers in 0..{n_head - 1}")
        if score and score not in SCORE_NAMES:
            raise ValueError(f"score={score!r} is not one of {SCORE_NAMES} (or '' for none)")
        if score and not any(score in p.scores for p in parts):
            hint = " (induction needs half_len=...)" if score == "induction" else ""
            raise ValueError(f"no part of this attention has the score {score!r}{hint}")
        if order not in ("layer", "score"):
            raise ValueError(f"order must be 'layer' or 'score', got {order!r}")
        self._parts = parts
        super().__init__(
            view=self._kind,
            parts=[_part_state(p, bits) for p in parts],
            part=part,
            layer=int(layer) % n_layer,
            heads=heads,
            score=score,
            order=order,
            title=title,
        )

    # -- construction from a model or from Hugging Face -------------------------------------------
    @classmethod
    def from_model(
        cls,
        model: Any,
        text_or_ids: Any,
        tokenizer: Any = None,
        *,
        target: Any = None,
        target_tokenizer: Any = None,
        **kwargs: Any,
    ) -> _AttentionView:
        """Run ``model(idx, return_attention=True)`` on one sequence and view its attention.

        Works for the book's GPT and BERT (one part, self-attention) and its encoder-decoder
        :class:`~transformer_core.Transformer`: pass the source as ``text_or_ids`` and the
        decoder's input as ``target``; the view then holds the encoder's, the decoder's and the
        cross-attention, each with its tokens. Text is encoded with ``tokenizer`` (the target's
        with ``target_tokenizer``, default ``tokenizer``); tokens are labelled
        ``tokenizer.decode([id])``, or the ids without a tokenizer. The model runs in eval mode
        under ``torch.no_grad()`` and is put back in its mode.
        """
        from ._inputs import encode_input as _encode_input
        from ._inputs import run_for_attention as _run_for_attention

        ids = _encode_input(text_or_ids, tokenizer)
        tgt_ids = None
        if target is not None:
            target_tokenizer = tokenizer if target_tokenizer is None else target_tokenizer
            tgt_ids = _encode_input(target, target_tokenizer)
        attn = _run_for_attention(model, ids, tgt_ids)

        def labels(seq: list[int], tok: Any) -> list[str]:
            return [tok.decode([i]) for i in seq] if tok is not None else [str(i) for i in seq]

        if tgt_ids is None:
            return cls(attn, labels(ids, tokenizer), **kwargs)
        return cls(attn, labels(ids, tokenizer), labels(tgt_ids, target_tokenizer), **kwargs)

    @classmethod
    def from_hf(
        cls, output: Any, tokens: Any, target_tokens: Any = None, **kwargs: Any
    ) -> _AttentionView:
        """View a Hugging Face model's attention (``model(..., output_attentions=True)``).

        ``output`` is the model's output (its ``attentions``, or an encoder-decoder's
        ``encoder_attentions``, ``decoder_attentions`` and ``cross_attentions``) or the tuple of
        per-layer tensors (batch, heads, queries, keys) itself. ``tokens`` label the (source)
        sequence, e.g. ``tokenizer.convert_ids_to_tokens(ids)``; ``target_tokens`` the decoder's.
        """
        if isinstance(output, (list, tuple)) and not hasattr(output, "keys"):
            return cls(list(output), tokens, **kwargs)
        get = output.get if isinstance(output, Mapping) else lambda k: getattr(output, k, None)
        enc_dec = {k: get(k) for k in ("encoder_attentions", "decoder_attentions", "cross_attentions")}
        if any(enc_dec.values()):  # None or () where a model has no such part
            enc_dec = {k: list(v) for k, v in enc_dec.items() if v}
            return cls(enc_dec, tokens, target_tokens, **kwargs)
        attentions = get("attentions")
        if not attentions:
            raise ValueError(
                "this output holds no attention: run the model with output_attentions=True (a "
                "model loaded with attn_implementation='sdpa' may return none: use 'eager')"
            )
        return cls(list(attentions), tokens, **kwargs)

    # -- what a reader and the tests read ---------------------------------------------------------
    @property
    def attention_parts(self) -> list[AttentionPart]:
        """The parts as given (float weights, before the page's 8- or 16-bit rounding)."""
        return list(self._parts)

    def embedded_size(self) -> int:
        """Bytes this view adds to a saved notebook: its widget state as JSON plus the fallback PNG."""
        state = self.get_state()
        state_bytes = len(json.dumps(state, separators=(",", ":")).encode())
        png = self._fallback_png()
        return state_bytes + len(base64.b64encode(png))

    def _fallback_png(self) -> bytes:
        return grid_png(self._parts[self.part])

    def _repr_mimebundle_(self, **kwargs: Any):
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        # a notebook viewer, or a notebook opened without its widget state, shows this instead
        data["image/png"] = base64.b64encode(self._fallback_png()).decode("ascii")
        return bundle

    def __repr__(self) -> str:
        def count(n: int, what: str) -> str:
            return f"{n} {what}{'' if n == 1 else 's'}"

        shapes = ", ".join(
            f"{p.name} {count(p.shape[0], 'layer')} × {count(p.shape[1], 'head')}, "
            f"{p.shape[2]} × {p.shape[3]} tokens"
            for p in self._parts
        )
        return f"{type(self).__name__}({shapes})"


class TokenView(_AttentionView):
    """The tokens twice, lines from each query to the keys it attends to; hover for the numbers.

    ``TokenView(attn, tokens)`` with ``attn`` shaped (layers, heads, queries, keys) (a model's
    (layers, 1, heads, queries, keys) too, or a list of layers); ``query_tokens=`` for
    cross-attention; a mapping of parts with ``target_tokens`` for an encoder-decoder (see
    :func:`attention_parts`). Also :meth:`from_model` and :meth:`from_hf`.

    In the view: choose the part (encoder-decoder), the layer and the heads (each in its own
    colour; all heads to start with, ``heads=`` to choose); hover a query token (left) to see
    where it looks, with its top weights per head written out, or a key token (right) to see who
    looks at it; click to pin that token. ``view.layer``, ``view.heads``, ``view.part`` and
    ``view.focus`` follow what the reader chose.
    """

    _kind = "token"


class GridView(_AttentionView):
    """Every layer x head as a small heatmap; hover for the numbers, click to open a head.

    The same inputs as :class:`TokenView`. ``score=`` ("entropy", "previous-token" or, with
    ``half_len=`` for a repeated sequence, "induction") colours each head by
    :mod:`transformer_core.interpret`'s score, and ``order="score"`` lists the heads best first
    (for entropy: sharpest first); both can be changed in the view. A click opens the head as a
    large heatmap beside its token view.
    """

    _kind = "grid"
