"""TokenView and GridView (transformer_core.viz.views): what they put into the page.

The state a view saves is what the book site and a notebook hold: every part's tokens on both
sides, the weights (8 or 16 bits, within half a step of the model's), interpret's head scores,
the choices (part, layer, heads); the front-end module and its CSS are the package's files.
Sizes are measured as a saved notebook holds them. Bad input gets an error that names the fix.
The browser tests (test_book_site.py, test_lab_browser.py, test_notebook_browser.py) check that
the views react.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from _optional import missing

from transformer_core import GPT, GPTConfig, Transformer, TransformerConfig, interpret
from transformer_core.encoder_only import BERT, BERTConfig
from transformer_core.viz import GridView, TokenView, attention_parts
from transformer_core.viz.views import decode_weights, grid_png

REPO = Path(__file__).resolve().parents[1]
VIZ = REPO / "transformer_core" / "viz"


def _gpt(n_layer=2, n_head=4, context_length=64, vocab=50, seed=0) -> GPT:
    torch.manual_seed(seed)
    return GPT(
        GPTConfig(vocab_size=vocab, context_length=context_length, n_layer=n_layer, n_head=n_head, d_model=32)
    )


def _random_attn(shape, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).softmax(-1)


# --------------------------------------------------------------------------------------------------
# State contents
# --------------------------------------------------------------------------------------------------


def test_token_view_state_holds_tokens_weights_and_scores():
    attn = _random_attn((2, 4, 6, 6))
    tokens = list("abcdef")
    view = TokenView(attn, tokens)
    state = view.get_state()
    assert state["_model_module"] == "anywidget" and state["view"] == "token"
    assert state["_esm"] == (VIZ / "views.js").read_text(encoding="utf-8")
    assert state["_css"] == (VIZ / "views.css").read_text(encoding="utf-8")
    (part,) = state["parts"]
    assert part["query_tokens"] == tokens and part["key_tokens"] == tokens
    assert (part["layers"], part["heads"], part["queries"], part["keys"]) == (2, 4, 6, 6)
    assert part["layer_names"] == ["0", "1"]
    got = decode_weights(part)
    assert np.abs(got - attn.double().numpy()).max() <= 0.5 / 255 + 1e-12
    np.testing.assert_allclose(
        part["scores"]["entropy"], interpret.entropy_score(attn).numpy().round(3), atol=1e-9
    )
    np.testing.assert_allclose(
        part["scores"]["previous-token"],
        interpret.previous_token_score(attn).numpy().round(3),
        atol=1e-9,
    )
    assert "induction" not in part["scores"]  # no half_len: not a repeated sequence
    assert state["heads"] == [0, 1, 2, 3]  # the token view starts with every head
    assert repr(view) == "TokenView(self-attention 2 layers × 4 heads, 6 × 6 tokens)"


def test_sixteen_bits_keep_four_digits():
    attn = _random_attn((1, 2, 5, 5), seed=1)
    part = TokenView(attn, "abcde", bits=16).parts[0]
    assert part["bits"] == 16
    assert np.abs(decode_weights(part) - attn.double().numpy()).max() <= 0.5 / 65535 + 1e-12


def test_grid_view_scores_and_induction_on_a_repeated_sequence():
    attn = _random_attn((2, 3, 8, 8), seed=2)
    grid = GridView(attn, "abcdabcd", half_len=4, score="induction", order="score")
    state = grid.get_state()
    assert state["view"] == "grid" and state["score"] == "induction" and state["order"] == "score"
    np.testing.assert_allclose(
        state["parts"][0]["scores"]["induction"],
        interpret.induction_score(attn, 4).numpy().round(3),
        atol=1e-9,
    )
    assert state["heads"] == [0]


def test_from_model_gpt_bert_and_the_encoder_decoder():
    gpt = _gpt(n_layer=2, n_head=2)
    ids = torch.arange(10)
    view = TokenView.from_model(gpt, ids)
    assert gpt.training  # put back in its mode
    with torch.no_grad():
        _, attn = gpt.eval()(ids[None], return_attention=True)
    np.testing.assert_allclose(decode_weights(view.parts[0]), attn[:, 0].numpy(), atol=0.5 / 255 + 1e-6)
    assert view.parts[0]["key_tokens"] == [str(i) for i in range(10)]

    torch.manual_seed(0)
    bert = BERT(BERTConfig(vocab_size=20, context_length=16, n_layer=1, n_head=2, d_model=16))
    bview = GridView.from_model(bert, torch.arange(5, 12))
    assert bview.parts[0]["queries"] == 7 and bview.parts[0]["heads"] == 2

    torch.manual_seed(0)
    t = Transformer(
        TransformerConfig(
            src_vocab_size=30, tgt_vocab_size=30, n_encoder_layers=2, n_decoder_layers=1,
            n_head=2, d_model=16, d_ff=32,
        )
    )
    src, tgt = torch.arange(3, 12), torch.arange(3, 8)
    ev = TokenView.from_model(t, src, target=tgt)
    names = [p["name"] for p in ev.parts]
    assert names == ["encoder self-attention", "decoder self-attention", "cross-attention"]
    enc, dec, cross = ev.parts
    assert (enc["layers"], enc["queries"], enc["keys"]) == (2, 9, 9)
    assert (dec["layers"], dec["queries"], dec["keys"]) == (1, 5, 5)
    assert (cross["queries"], cross["keys"]) == (5, 9)
    assert cross["query_tokens"] == [str(i) for i in range(3, 8)]  # the target's tokens ask
    assert cross["key_tokens"] == [str(i) for i in range(3, 12)]  # over the source's
    assert "previous-token" not in cross["scores"]  # not square: entropy only
    assert TokenView.from_model(t, src, target=tgt, part="cross-attention").part == 2


def test_from_hugging_face_output_attentions():
    from types import SimpleNamespace

    layers = tuple(_random_attn((1, 2, 4, 4), seed=s) for s in range(3))
    view = TokenView.from_hf(SimpleNamespace(attentions=layers), ["a", "b", "c", "d"])
    assert view.parts[0]["layers"] == 3
    same = TokenView.from_hf(layers, "abcd")
    assert same.parts[0]["data"] == view.parts[0]["data"]
    enc_dec = SimpleNamespace(
        encoder_attentions=tuple(_random_attn((1, 2, 4, 4)) for _ in range(2)),
        decoder_attentions=tuple(_random_attn((1, 2, 3, 3)) for _ in range(2)),
        cross_attentions=tuple(_random_attn((1, 2, 3, 4)) for _ in range(2)),
        attentions=None,
    )
    ev = GridView.from_hf(enc_dec, "abcd", target_tokens="xyz")
    assert [p["name"] for p in ev.parts] == [
        "encoder self-attention", "decoder self-attention", "cross-attention",
    ]
    with pytest.raises(ValueError, match="output_attentions=True"):
        TokenView.from_hf(SimpleNamespace(attentions=None), "abcd")


def test_a_real_hugging_face_gpt2_output():
    from _optional import require_module

    transformers = require_module("transformers", "transformers is not installed (book extra)")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=16, vocab_size=40, n_positions=32, attn_implementation="eager"
    )
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        out = model(torch.arange(6)[None], output_attentions=True)
    view = TokenView.from_hf(out, [f"t{i}" for i in range(6)])
    expected = torch.stack(out.attentions)[:, 0].numpy()
    np.testing.assert_allclose(decode_weights(view.parts[0]), expected, atol=0.5 / 255 + 1e-6)


# --------------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------------


def _saved_notebook_bytes(view) -> int:
    """What a view adds to a notebook saved with its widget state (as nbconvert saves it)."""
    models = [view, view.layout]
    state = {
        m.model_id: {
            "model_name": m._model_name,
            "model_module": m._model_module,
            "model_module_version": m._model_module_version,
            "state": m.get_state(),
        }
        for m in models
    }
    data, _ = view._repr_mimebundle_()
    output = {"output_type": "display_data", "data": data, "metadata": {}}
    return len(json.dumps(state, indent=1).encode()) + len(json.dumps(output, indent=1).encode())


@pytest.mark.parametrize("cls", [TokenView, GridView])
def test_a_2_layer_4_head_64_token_view_is_within_200_kB(cls):
    model = _gpt(n_layer=2, n_head=4, context_length=64, vocab=64)
    view = cls.from_model(model, torch.randint(0, 50, (64,), generator=torch.Generator().manual_seed(0)))
    size = _saved_notebook_bytes(view)
    print(f"{cls.__name__}, 2 layers x 4 heads x 64 tokens: {size / 1000:.1f} kB in the notebook")
    assert size <= 200_000
    assert abs(view.embedded_size() - size) < 5_000  # what embedded_size() tells a reader
    # 16 bits double the weights and still fit
    wide = cls.from_model(model, torch.arange(64), bits=16)
    assert _saved_notebook_bytes(wide) <= 200_000


def test_a_long_view_keeps_to_the_budget_per_weight():
    """Past 64 tokens the view grows with the weights only: 2 x 4 heads x 128 tokens, four times
    the weights of the 64-token view, stays within four times its 200 kB (test_book_site.py's
    rule for committed views); the front-end is the same, so the ratio is below four."""
    model = _gpt(n_layer=2, n_head=4, context_length=128, vocab=64)
    ids = torch.randint(0, 50, (128,), generator=torch.Generator().manual_seed(0))
    long, short = TokenView.from_model(model, ids), TokenView.from_model(model, ids[:64])
    size, short_size = _saved_notebook_bytes(long), _saved_notebook_bytes(short)
    print(f"TokenView, 2 layers x 4 heads x 128 tokens: {size / 1000:.1f} kB in the notebook")
    assert size <= 4 * 200_000
    assert 2 * short_size < size < 4 * short_size


def test_a_large_view_is_refused_with_a_way_out():
    attn = np.full((12, 12, 128, 128), 1 / 128)
    with pytest.raises(ValueError, match=r"2\.4 MB.*max_bytes=1,000,000.*fewer layers"):
        TokenView(attn, [str(i) for i in range(128)], max_bytes=1_000_000)
    small = TokenView(attn[:2], [str(i) for i in range(128)], max_bytes=1_000_000)  # the way out
    assert small.parts[0]["layers"] == 2


def test_the_fallback_image_is_a_png_of_the_grid():
    attn = _random_attn((2, 3, 5, 5))
    view = GridView(attn, "abcde")
    data, _ = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    png = base64.b64decode(data["image/png"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    part = attention_parts(attn, "abcde")[0]
    assert png == grid_png(part)
    scale = 64 // 5
    assert (width, height) == (3 * (5 * scale + 4) + 4, 2 * (5 * scale + 4) + 4)
    assert data["text/plain"] == repr(view)


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(attn=np.zeros((2, 3))), r"shaped \(layers, heads, queries, keys\)"),
        (dict(attn=np.full((1, 1, 3, 3), np.nan)), "NaN"),
        (dict(attn=np.full((1, 1, 3, 3), 2.0)), r"lie in \[0, 1\].*softmax"),
        (dict(attn=np.full((1, 1, 4, 4), 0.25)), "3 key tokens for 4 key positions"),
        (dict(attn=np.full((1, 2, 2, 1, 3, 3), 0.3)), "shaped"),
        (dict(attn=np.full((1, 2, 1, 3, 3), 0.3)), "batch of 2.*batch_index"),
        (dict(attn=np.full((1, 1, 3, 3), 0.3), bits=12), "bits must be 8 or 16"),
        (dict(attn=np.full((1, 1, 3, 3), 0.3), heads=[5]), r"heads=\[5\].*0\.\.0"),
        (dict(attn=np.full((1, 1, 3, 3), 0.3), layer=3), "layer=3 is out of range"),
        (dict(attn=np.full((1, 1, 3, 3), 0.3), score="curvature"), "not one of"),
        (dict(attn=np.full((1, 1, 3, 3), 0.3), score="induction"), "half_len"),
        (dict(attn=np.full((1, 1, 3, 3), 0.3), order="random"), "order must be"),
        (dict(attn=np.full((1, 1, 3, 3), 0.3), target_tokens="xyz"), "query_tokens"),
        (dict(attn=[]), "no layers"),
        (dict(attn={}), "empty mapping"),
        (dict(attn={"cross": np.full((1, 1, 2, 3), 0.3)}), "target_tokens"),
        (dict(attn={"mystery": np.full((1, 1, 5, 5), 0.2)}), "fits neither"),
    ],
)
def test_bad_input_is_named(kwargs, match):
    kwargs = dict(kwargs)
    attn = kwargs.pop("attn")
    with pytest.raises(ValueError, match=match):
        TokenView(attn, "abc", **kwargs)


def test_a_bad_part_name_lists_the_parts():
    parts = {"encoder": np.full((1, 1, 3, 3), 1 / 3), "cross": np.full((1, 1, 2, 3), 1 / 3)}
    with pytest.raises(ValueError, match=r"part='decoder' is not one of"):
        TokenView(parts, "abc", "xy", part="decoder")


# --------------------------------------------------------------------------------------------------
# The front-end files and the site's copy of anywidget
# --------------------------------------------------------------------------------------------------


def test_front_end_is_plain_and_fetches_nothing():
    js = (VIZ / "views.js").read_text(encoding="utf-8")
    css = (VIZ / "views.css").read_text(encoding="utf-8")
    assert "export default" in js
    for text in (js, css):
        assert not re.search(r"https?://|//cdn|require\(|import\s", text), "the view must load nothing"
    assert '"attention-view"' in js or "`attention-view" in js  # the root element's class
    assert len(js.encode()) + len(css.encode()) < 40_000  # travels in every view's state


def test_the_site_serves_the_anywidget_front_end_the_lock_installs():
    """The book site's copy of anywidget's front-end (package.json) is the Python package's."""
    package = json.loads((REPO / "package.json").read_text(encoding="utf-8"))
    lock = (REPO / "requirements-lock.txt").read_text(encoding="utf-8")
    pinned = re.search(r"^anywidget==(\S+)", lock, re.M)
    assert pinned, "requirements-lock.txt pins no anywidget (make lock)"
    assert package["dependencies"]["anywidget"] == pinned.group(1), (
        "package.json's anywidget (the front-end the site serves) and requirements-lock.txt's "
        "(the Python side that writes the widget state) differ: bring them to the same version"
    )


def test_package_data_ships_the_front_end():
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert '"viz/*.js"' in pyproject and '"viz/*.css"' in pyproject


# --------------------------------------------------------------------------------------------------
# The front-end's own logic, run by Node.js (no page): where the token view draws its lines
# --------------------------------------------------------------------------------------------------

ROW = 18  # px per token row (views.js)


def _run_front_end(tmp_path: Path, script: str, data) -> dict:
    """Run `script` with views.js's exports as `views` and `data` as `input`; return its JSON."""
    node = shutil.which("node")
    if node is None:
        missing("the front-end's tests need Node.js (node), which make book needs as well")
    module = tmp_path / "views.mjs"  # an ES module to Node.js by its extension
    shutil.copyfile(VIZ / "views.js", module)
    (tmp_path / "input.json").write_text(json.dumps(data), encoding="utf-8")
    runner = tmp_path / "run.mjs"
    runner.write_text(
        f"import * as views from {json.dumps(module.as_uri())};\n"
        'import { readFileSync } from "node:fs";\n'
        f"const input = JSON.parse(readFileSync({json.dumps(str(tmp_path / 'input.json'))}, 'utf8'));\n"
        f"{script}\n",
        encoding="utf-8",
    )
    done = subprocess.run([node, str(runner)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"node failed:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout)


def test_lines_of_several_heads_lie_side_by_side_not_on_top(tmp_path: Path):
    """Three heads with the same weights: each head's lines are shifted by its own few pixels, at
    both ends alike (parallel, no crossing), so no head's line hides another's; one head alone
    is not shifted; a hovered query draws only its row, still head by head."""
    attn = torch.zeros(1, 3, 5, 5)
    for q in range(5):
        attn[0, :, q, max(q - 1, 0)] = 0.75  # the previous token, the same in every head
        attn[0, :, q, q] += 0.25
    state = TokenView(attn, "abcde").parts[0]
    got = _run_front_end(
        tmp_path,
        """
        const part = views.decodePart(input.part);
        console.log(JSON.stringify({
          all: views.lineSegments(part, 0, [0, 1, 2], null, 150),
          one: views.lineSegments(part, 0, [1], null, 150),
          hovered: views.lineSegments(part, 0, [2, 0], { side: "query", index: 3 }, 150),
          offsets: Object.fromEntries([1, 2, 4, 16].map((n) => [n, views.headOffsets(n)])),
        }));
        """,
        {"part": state},
    )
    lines: dict[tuple[int, int], dict[int, dict]] = {}
    for s in got["all"]:
        lines.setdefault((s["q"], s["k"]), {})[s["head"]] = s
    assert len(lines) == 9 and all(len(by_head) == 3 for by_head in lines.values())
    for (q, k), by_head in lines.items():
        starts = [by_head[h]["y0"] for h in (0, 1, 2)]
        ends = [by_head[h]["y1"] for h in (0, 1, 2)]
        assert starts == sorted(starts) and len(set(starts)) == 3, (q, k, starts)  # in head order
        assert len({round(e - s, 9) for s, e in zip(starts, ends, strict=True)}) == 1  # parallel
        assert min(b - a for a, b in zip(starts, starts[1:], strict=False)) >= 2  # apart by more than a hair
        assert all(abs(y - (q + 0.5) * ROW) < ROW / 2 for y in starts)  # still on the query's row
        assert all(abs(y - (k + 0.5) * ROW) < ROW / 2 for y in ends)
    assert {(s["y0"], s["y1"]) for s in got["one"]} == {
        ((q + 0.5) * ROW, (k + 0.5) * ROW) for q, k in lines
    }
    hovered = got["hovered"]
    assert {s["q"] for s in hovered} == {3} and [s["head"] for s in hovered] == [2, 2, 0, 0]
    assert {s["y0"] for s in hovered if s["head"] == 2} != {s["y0"] for s in hovered if s["head"] == 0}
    for n, offsets in got["offsets"].items():
        assert len(offsets) == int(n) and len(set(offsets)) == int(n)
        assert abs(sum(offsets)) < 1e-9 and max(offsets) - min(offsets) <= ROW - 6


def test_the_front_end_reads_the_weights_python_wrote(tmp_path: Path):
    """decodePart (views.js) and decode_weights (Python) agree, 8 and 16 bits, on a long view."""
    attn = _random_attn((1, 2, 100, 100), seed=3)
    tokens = [f"t{i}" for i in range(100)]
    parts = [TokenView(attn, tokens, bits=bits).parts[0] for bits in (8, 16)]
    got = _run_front_end(
        tmp_path,
        """
        const out = input.parts.map((p) => {
          const part = views.decodePart(p);
          return [[0, 0, 0], [1, 99, 7], [0, 70, 99]].map(([h, q, k]) => part.w(0, h, q, k));
        });
        console.log(JSON.stringify({ out }));
        """,
        {"parts": parts},
    )
    for part, values in zip(parts, got["out"], strict=True):
        w = decode_weights(part)
        want = [w[0, h, q, k] for h, q, k in [(0, 0, 0), (1, 99, 7), (0, 70, 99)]]
        np.testing.assert_allclose(values, want, atol=1e-6)
