// The front-end of transformer_core.viz.views (TokenView, GridView): plain DOM and canvas, no
// library, nothing fetched. anywidget loads it from the widget's state (_esm), in JupyterLab and
// on the book's static pages alike. The model holds the parts (tokens, weights as base64 of
// uint8 or uint16, head scores) and what the reader chose: part, layer, heads, focus, score, order.

const ROW = 18; // px per token row in the token view
const HEAD_COLORS = [
  "#1f77b4", "#e4572e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
  "#17becf", "#ff7f0e", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
];
const VIRIDIS = [
  [68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
  [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37],
];
const SCORE_INFO = {
  entropy: { label: "entropy (nats, low = sharp)", best: "low" },
  "previous-token": { label: "previous-token", best: "high" },
  induction: { label: "induction", best: "high" },
};

const LUT = (() => {
  const lut = new Uint8ClampedArray(256 * 3);
  const n = VIRIDIS.length - 1;
  for (let i = 0; i < 256; i++) {
    const x = (i / 255) * n, k = Math.min(Math.floor(x), n - 1), f = x - k;
    for (let c = 0; c < 3; c++) {
      lut[i * 3 + c] = Math.round(VIRIDIS[k][c] + f * (VIRIDIS[k + 1][c] - VIRIDIS[k][c]));
    }
  }
  return lut;
})();

function headColor(h) {
  return HEAD_COLORS[h % HEAD_COLORS.length];
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// How a token is written: spaces, newlines and tabs made visible (as the PNG explorer does).
function label(t) {
  if (t === "") return "''";
  return t.replace(/ /g, "\u2423").replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5").replace(/\r/g, "\u240d");
}

function quoted(t) {
  return "'" + label(t) + "'";
}

// One part's weights, decoded once: w(l, h, q, k) in [0, 1].
function decodePart(p) {
  const bin = atob(p.data);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  let values;
  if (p.bits === 16) {
    const n = bytes.length / 2;
    values = new Float32Array(n);
    for (let i = 0; i < n; i++) values[i] = (bytes[2 * i] | (bytes[2 * i + 1] << 8)) / 65535;
  } else {
    values = new Float32Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) values[i] = bytes[i] / 255;
  }
  const Q = p.queries, K = p.keys, H = p.heads;
  return {
    ...p,
    values,
    w: (l, h, q, k) => values[((l * H + h) * Q + q) * K + k],
    digits: p.bits === 16 ? 3 : 2,
  };
}

// Several heads at once: each head's lines are shifted a few pixels up or down (the same shift at
// both ends, so a head's lines run parallel to the other heads'), in the order the heads are
// listed. Lines of different heads between the same two tokens then lie side by side, as bertviz
// draws its heads in bands, instead of the last head's colour covering the others. Returns one
// shift in px per shown head; a single head is not shifted.
function headOffsets(count, row = ROW) {
  if (count <= 1) return [0];
  const step = Math.min(3, (row - 6) / (count - 1));
  return Array.from({ length: count }, (_, i) => (i - (count - 1) / 2) * step);
}

// The lines the token view draws: one per (head, query, key) with a weight of at least 0.01, from
// the query's row on the left (x0, y0) to the key's row on the right (x1, y1); with a focus (a
// token hovered or pinned) only that token's row or column.
function lineSegments(part, layer, heads, focus, width, row = ROW) {
  const offsets = headOffsets(heads.length, row);
  const out = [];
  heads.forEach((h, slot) => {
    const dy = offsets[slot];
    for (let q = 0; q < part.queries; q++) {
      if (focus && focus.side === "query" && focus.index !== q) continue;
      for (let k = 0; k < part.keys; k++) {
        if (focus && focus.side === "key" && focus.index !== k) continue;
        const v = part.w(layer, h, q, k);
        if (v < 0.01) continue;
        out.push({ head: h, q, k, v, x0: 2, y0: (q + 0.5) * row + dy, x1: width - 2, y1: (k + 0.5) * row + dy });
      }
    }
  });
  return out;
}

function fmt(part, x) {
  return x.toFixed(part.digits);
}

function makeSelect(cls, options, value, onChange, title) {
  const s = el("select", cls);
  if (title) s.title = title;
  options.forEach(([text, v]) => {
    const o = el("option", null, text);
    o.value = String(v);
    s.appendChild(o);
  });
  s.value = String(value);
  s.addEventListener("change", () => onChange(s.value));
  return s;
}

function labelled(text, control) {
  const l = el("label", "av-label");
  l.appendChild(el("span", null, text + " "));
  l.appendChild(control);
  return l;
}

// A heatmap of one head on a canvas (one pixel per cell, scaled by CSS): returns the canvas.
function heatmapCanvas(part, layer, head, cssWidth, cssHeight) {
  const c = el("canvas", "av-heat");
  c.width = part.keys;
  c.height = part.queries;
  c.style.width = cssWidth + "px";
  c.style.height = cssHeight + "px";
  const ctx = c.getContext("2d");
  const img = ctx.createImageData(part.keys, part.queries);
  for (let q = 0; q < part.queries; q++) {
    for (let k = 0; k < part.keys; k++) {
      const v = Math.round(part.w(layer, head, q, k) * 255), o = (q * part.keys + k) * 4;
      img.data[o] = LUT[v * 3];
      img.data[o + 1] = LUT[v * 3 + 1];
      img.data[o + 2] = LUT[v * 3 + 2];
      img.data[o + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
  return c;
}

// The (query, key) cell under the mouse on a heatmap canvas.
function cellAt(part, canvas, event) {
  const r = canvas.getBoundingClientRect();
  const k = Math.floor(((event.clientX - r.left) / r.width) * part.keys);
  const q = Math.floor(((event.clientY - r.top) / r.height) * part.queries);
  if (q < 0 || k < 0 || q >= part.queries || k >= part.keys) return null;
  return { q, k };
}

function cellText(part, layer, head, cell) {
  const v = part.w(layer, head, cell.q, cell.k);
  return (
    `layer ${part.layer_names[layer]} \u00b7 head ${head} \u00b7 query ${cell.q} ` +
    `${quoted(part.query_tokens[cell.q])} \u2192 key ${cell.k} ${quoted(part.key_tokens[cell.k])}: ` +
    fmt(part, v)
  );
}

// ------------------------------------------------------------------------------------------------
// The token view: queries left, keys right, lines weighted by attention
// ------------------------------------------------------------------------------------------------

function tokenView(host, part, opts) {
  // opts: layer, heads (array), focus ({side, index} or null), onFocus(f), onHeads(h), status(el)
  const wrap = el("div", "av-tokens-wrap");
  const body = el("div", "av-tokens");
  const left = el("div", "av-col av-queries");
  const right = el("div", "av-col av-keys");
  const canvas = el("canvas", "av-lines");
  const n = Math.max(part.queries, part.keys);
  const height = n * ROW;
  const width = 150;
  // a long sequence makes a tall canvas: keep its backing store inside what browsers allow
  const dpr = Math.min(window.devicePixelRatio || 1, 16000 / height);
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  canvas.style.width = width + "px";
  canvas.style.height = height + "px";
  body.style.height = height + "px";
  const qEls = part.query_tokens.map((t, i) => {
    const d = el("div", "av-tok av-query", label(t));
    d.dataset.i = i;
    d.title = `query ${i} ${quoted(t)}`;
    left.appendChild(d);
    return d;
  });
  const kEls = part.key_tokens.map((t, i) => {
    const d = el("div", "av-tok av-key", label(t));
    d.dataset.i = i;
    d.title = `key ${i} ${quoted(t)}`;
    right.appendChild(d);
    return d;
  });
  body.append(left, canvas, right);
  wrap.appendChild(body);
  const detail = el("div", "av-detail");
  host.append(wrap, detail);

  let pinned = opts.focus && opts.focus.side ? opts.focus : null;
  let hover = null;

  function draw() {
    const f = hover || pinned;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.lineWidth = f ? 2 : 1.5;
    // one path per head and level of opacity (32 levels): a long sequence has tens of thousands
    // of lines, and one stroke() each would make every redraw slow
    const paths = new Map();
    for (const s of lineSegments(part, opts.layer, opts.heads, f, width)) {
      const level = Math.round((f ? Math.min(1, 0.15 + s.v) : s.v * 0.7) * 32);
      const key = `${s.head}:${level}`;
      if (!paths.has(key)) paths.set(key, { head: s.head, alpha: level / 32, path: new Path2D() });
      const p = paths.get(key).path;
      p.moveTo(s.x0, s.y0);
      p.lineTo(s.x1, s.y1);
    }
    for (const { head, alpha, path } of paths.values()) {  // in the order the heads are drawn
      ctx.strokeStyle = headColor(head);
      ctx.globalAlpha = alpha;
      ctx.stroke(path);
    }
    ctx.globalAlpha = 1;
    // the focused token, and the other side's tokens shaded by weight (the strongest head's colour)
    qEls.forEach((d) => { d.style.background = ""; d.classList.remove("av-focus"); });
    kEls.forEach((d) => { d.style.background = ""; d.classList.remove("av-focus"); });
    if (!f) {
      detail.textContent = "";
      detail.appendChild(el("span", "av-hint",
        "hover a query (left) to see where it looks, a key (right) to see who looks at it; click to pin"));
      return;
    }
    const mine = f.side === "query" ? qEls : kEls;
    const other = f.side === "query" ? kEls : qEls;
    mine[f.index].classList.add("av-focus");
    other.forEach((d, j) => {
      let best = 0, bestHead = opts.heads[0];
      for (const h of opts.heads) {
        const v = f.side === "query" ? part.w(opts.layer, h, f.index, j) : part.w(opts.layer, h, j, f.index);
        if (v > best) { best = v; bestHead = h; }
      }
      if (best >= 0.01) {
        d.style.background = headColor(bestHead) + Math.round(Math.min(1, best) * 200 + 30).toString(16).padStart(2, "0");
      }
    });
    writeDetail(f);
  }

  function writeDetail(f) {
    detail.textContent = "";
    const toks = f.side === "query" ? part.query_tokens : part.key_tokens;
    const otherToks = f.side === "query" ? part.key_tokens : part.query_tokens;
    const n = f.side === "query" ? part.keys : part.queries;
    const head = el("div", "av-detail-title",
      f.side === "query"
        ? `query ${f.index} ${quoted(toks[f.index])} (row): where it looks, top weights`
        : `key ${f.index} ${quoted(toks[f.index])} (column): who looks at it, top weights`);
    detail.appendChild(head);
    for (const h of opts.heads) {
      const vals = [];
      for (let j = 0; j < n; j++) {
        const v = f.side === "query" ? part.w(opts.layer, h, f.index, j) : part.w(opts.layer, h, j, f.index);
        vals.push([v, j]);
      }
      vals.sort((a, b) => b[0] - a[0] || a[1] - b[1]);
      const line = el("div", "av-detail-row");
      const sw = el("span", "av-swatch");
      sw.style.background = headColor(h);
      line.append(sw, el("b", null, `head ${h}: `));
      line.appendChild(el("span", null, vals.slice(0, 8).filter((x) => x[0] >= 0.005)
        .map(([v, j]) => `${quoted(otherToks[j])}@${j} ${fmt(part, v)}`).join(" \u00b7 ") || "all below 0.005"));
      detail.appendChild(line);
    }
    if (opts.status) opts.status(f);
  }

  function onHover(side, e) {
    const t = e.target.closest(".av-tok");
    if (!t) return;
    hover = { side, index: Number(t.dataset.i) };
    draw();
  }
  left.addEventListener("mouseover", (e) => onHover("query", e));
  right.addEventListener("mouseover", (e) => onHover("key", e));
  body.addEventListener("mouseleave", () => { hover = null; draw(); if (opts.status) opts.status(pinned); });
  function onClick(side, e) {
    const t = e.target.closest(".av-tok");
    if (!t) return;
    const f = { side, index: Number(t.dataset.i) };
    pinned = pinned && pinned.side === f.side && pinned.index === f.index ? null : f;
    draw();
    opts.onFocus(pinned);
  }
  left.addEventListener("click", (e) => onClick("query", e));
  right.addEventListener("click", (e) => onClick("key", e));
  draw();
  return { draw };
}

// ------------------------------------------------------------------------------------------------
// The widget: token view or grid view, and the controls above it
// ------------------------------------------------------------------------------------------------

function render({ model, el: host }) {
  const root = el("div", "attention-view");
  host.appendChild(root);
  let parts = null, partsData = null;

  function save(values) {
    for (const [k, v] of Object.entries(values)) model.set(k, v);
    try { model.save_changes(); } catch (err) { /* no kernel (a static page): the view still works */ }
  }

  function current() {
    if (model.get("parts") !== partsData) {
      partsData = model.get("parts");
      parts = partsData.map(decodePart);
    }
    const pi = Math.min(Math.max(model.get("part") || 0, 0), parts.length - 1);
    const part = parts[pi];
    const layer = Math.min(Math.max(model.get("layer") || 0, 0), part.layers - 1);
    let heads = (model.get("heads") || []).filter((h) => h >= 0 && h < part.heads);
    if (!heads.length) heads = [0];
    return { pi, part, layer, heads };
  }

  function setStatus(node, text) {
    node.textContent = text;
  }

  function controlsBar(s, withHeads) {
    const bar = el("div", "av-bar");
    if (parts.length > 1) {
      bar.appendChild(labelled("attention", makeSelect("av-part", parts.map((p, i) => [p.name, i]), s.pi, (v) => {
        const p = parts[Number(v)];
        save({ part: Number(v), layer: Math.min(s.layer, p.layers - 1), heads: s.heads.filter((h) => h < p.heads), focus: {} });
      })));
    }
    bar.appendChild(labelled("layer", makeSelect("av-layer",
      s.part.layer_names.map((n, i) => [n, i]), s.layer, (v) => save({ layer: Number(v) }))));
    if (withHeads) {
      const box = el("span", "av-heads");
      box.appendChild(el("span", null, "heads "));
      for (let h = 0; h < s.part.heads; h++) {
        const b = el("button", "av-head", String(h));
        b.type = "button";
        b.dataset.head = h;
        b.title = `head ${h}: click to show or hide, double-click to show only this head`;
        const on = s.heads.includes(h);
        b.classList.toggle("av-on", on);
        b.style.borderColor = headColor(h);
        if (on) b.style.background = headColor(h);
        b.addEventListener("click", () => {
          const now = s.heads.includes(h) ? s.heads.filter((x) => x !== h) : [...s.heads, h].sort((a, b) => a - b);
          if (now.length) save({ heads: now });
        });
        b.addEventListener("dblclick", () => save({ heads: [h] }));
        box.appendChild(b);
      }
      const all = el("button", "av-all", "all");
      all.type = "button";
      all.addEventListener("click", () => save({ heads: [...Array(s.part.heads).keys()] }));
      box.appendChild(all);
      bar.appendChild(box);
    }
    return bar;
  }

  function statusText(s, f) {
    let text = `${s.part.name} \u00b7 layer ${s.part.layer_names[s.layer]} \u00b7 heads ${s.heads.join(",")}`;
    if (f && f.side) {
      const toks = f.side === "query" ? s.part.query_tokens : s.part.key_tokens;
      text += ` \u00b7 ${f.side} ${f.index} ${quoted(toks[f.index])}`;
    }
    return text;
  }

  function renderToken(s, into) {
    into.appendChild(controlsBar(s, true));
    const status = el("div", "av-status");
    into.appendChild(status);
    const focus = model.get("focus");
    setStatus(status, statusText(s, focus));
    tokenView(into, s.part, {
      layer: s.layer,
      heads: s.heads,
      focus,
      onFocus: (f) => save({ focus: f || {} }),
      status: (f) => setStatus(status, statusText(s, f)),
    });
  }

  function scoreOf(part, name, l, h) {
    const t = part.scores && part.scores[name];
    return t ? t[l][h] : null;
  }

  function renderGrid(s, into) {
    const part = s.part;
    const bar = el("div", "av-bar");
    if (parts.length > 1) {
      bar.appendChild(labelled("attention", makeSelect("av-part", parts.map((p, i) => [p.name, i]), s.pi,
        (v) => save({ part: Number(v), layer: 0, heads: [0] }))));
    }
    const names = Object.keys(part.scores || {});
    const score = names.includes(model.get("score")) ? model.get("score") : "";
    bar.appendChild(labelled("score", makeSelect("av-score",
      [["none", ""], ...names.map((n) => [SCORE_INFO[n] ? SCORE_INFO[n].label : n, n])], score,
      (v) => save({ score: v }))));
    const order = score && model.get("order") === "score" ? "score" : "layer";
    bar.appendChild(labelled("order", makeSelect("av-order",
      [["layer \u00d7 head", "layer"], ["by score", "score"]], order, (v) => save({ order: v }))));
    into.appendChild(bar);
    const status = el("div", "av-status",
      `${part.name} \u00b7 ${part.layers} layers \u00d7 ${part.heads} heads \u00b7 hover a head for its weights, click to open it`);
    into.appendChild(status);

    // the score's range over every head, for colouring
    let lo = Infinity, hi = -Infinity;
    if (score) {
      for (let l = 0; l < part.layers; l++) for (let h = 0; h < part.heads; h++) {
        const v = scoreOf(part, score, l, h); lo = Math.min(lo, v); hi = Math.max(hi, v);
      }
    }
    const strength = (v) => {
      if (!score) return 0;
      const x = hi > lo ? (v - lo) / (hi - lo) : 1;
      return SCORE_INFO[score] && SCORE_INFO[score].best === "low" ? 1 - x : x;
    };
    const thumb = Math.max(56, Math.min(96, Math.floor(720 / part.heads) - 12));
    const thumbH = Math.round(thumb * Math.min(2, part.queries / part.keys));
    const grid = el("div", "av-grid");
    let heads = [];
    for (let l = 0; l < part.layers; l++) for (let h = 0; h < part.heads; h++) heads.push([l, h]);
    if (order === "score") {
      heads.sort((a, b) => strength(scoreOf(part, score, b[0], b[1])) - strength(scoreOf(part, score, a[0], a[1]))
        || a[0] - b[0] || a[1] - b[1]);
      grid.classList.add("av-ranked");
    } else {
      grid.style.gridTemplateColumns = `auto repeat(${part.heads}, ${thumb + 8}px)`;
      grid.appendChild(el("span", "av-corner", ""));
      for (let h = 0; h < part.heads; h++) grid.appendChild(el("span", "av-colhead", `head ${h}`));
    }
    heads.forEach(([l, h], idx) => {
      if (order !== "score" && h === 0) grid.appendChild(el("span", "av-rowhead", `layer ${part.layer_names[l]}`));
      const cell = el("div", "av-cell");
      cell.dataset.layer = l;
      cell.dataset.head = h;
      const c = heatmapCanvas(part, l, h, thumb, thumbH);
      cell.appendChild(c);
      const v = score ? scoreOf(part, score, l, h) : null;
      const cap = el("div", "av-cap",
        (order === "score" ? `#${idx + 1} L${part.layer_names[l]} H${h}` : `L${part.layer_names[l]} H${h}`) +
        (v === null ? "" : ` \u00b7 ${v.toFixed(2)}`));
      if (score) cap.style.background = `rgba(228, 87, 46, ${(0.1 + 0.75 * strength(v)).toFixed(3)})`;
      cell.appendChild(cap);
      if (l === s.layer && s.heads.length === 1 && s.heads[0] === h && model.get("focus").open) {
        cell.classList.add("av-open");
      }
      c.addEventListener("mousemove", (e) => {
        const cellQK = cellAt(part, c, e);
        if (cellQK) setStatus(status, cellText(part, l, h, cellQK));
      });
      cell.addEventListener("click", () => save({ layer: l, heads: [h], focus: { open: true } }));
      grid.appendChild(cell);
    });
    into.appendChild(grid);

    const f = model.get("focus") || {};
    if (f.open) {
      const zoom = el("div", "av-zoom");
      const h = s.heads[0];
      const top = el("div", "av-zoom-title");
      top.appendChild(el("b", null, `${part.name} \u00b7 layer ${part.layer_names[s.layer]} \u00b7 head ${h}`));
      const v = score ? scoreOf(part, score, s.layer, h) : null;
      if (v !== null) top.appendChild(el("span", null, ` \u00b7 ${score} ${v.toFixed(3)}`));
      const close = el("button", "av-close", "close");
      close.type = "button";
      close.addEventListener("click", () => save({ focus: {} }));
      top.appendChild(close);
      zoom.appendChild(top);
      const zstatus = el("div", "av-status av-zoom-status", "hover the heatmap for query, key and weight");
      zoom.appendChild(zstatus);
      const sideBySide = el("div", "av-zoom-body");
      const n = Math.max(part.queries, part.keys);
      const px = Math.max(3, Math.min(16, Math.floor(480 / n)));
      const heatBox = el("div", "av-heatbox");
      const big = heatmapCanvas(part, s.layer, h, part.keys * px, part.queries * px);
      big.classList.add("av-big");
      big.addEventListener("mousemove", (e) => {
        const qk = cellAt(part, big, e);
        if (qk) setStatus(zstatus, cellText(part, s.layer, h, qk));
      });
      heatBox.appendChild(big);
      const tv = el("div", "av-zoom-tokens");
      sideBySide.append(heatBox, tv);
      zoom.appendChild(sideBySide);
      tokenView(tv, part, { layer: s.layer, heads: [h], focus: null, onFocus: () => {} });
      into.appendChild(zoom);
    }
  }

  const SCROLLERS = ".av-tokens-wrap, .av-heatbox, .av-grid";

  function draw() {
    // a redraw keeps where the reader had scrolled to (long sequences)
    const scrolled = [...root.querySelectorAll(SCROLLERS)].map((e) => [e.scrollTop, e.scrollLeft]);
    root.textContent = "";
    const s = current();
    const view = model.get("view") === "grid" ? "grid" : "token";
    root.className = `attention-view av-${view}-view`;
    root.dataset.view = view;
    root.dataset.part = s.pi;
    root.dataset.layer = s.layer;
    root.dataset.heads = s.heads.join(",");
    const title = model.get("title");
    if (title) root.appendChild(el("div", "av-title", title));
    if (view === "grid") renderGrid(s, root);
    else renderToken(s, root);
    [...root.querySelectorAll(SCROLLERS)].forEach((e, i) => {
      if (scrolled[i]) [e.scrollTop, e.scrollLeft] = scrolled[i];
    });
  }

  const redraw = () => draw();
  const events = ["parts", "part", "layer", "heads", "focus", "score", "order", "view", "title"];
  for (const name of events) model.on(`change:${name}`, redraw);
  draw();
  return () => {
    for (const name of events) model.off(`change:${name}`, redraw);
  };
}

export default { render };
// for the book's tests (Node.js runs these without a page)
export { decodePart, headOffsets, lineSegments };
