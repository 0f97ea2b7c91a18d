#!/usr/bin/env python3
"""Draw the book's logo and favicon: a causal attention map, the book's own picture.

    python scripts/make_logo.py      # writes images/logo.svg and images/favicon.png

A 6 x 6 attention matrix in the book's heatmap colours (viridis): every query row attends only
to itself and earlier keys (the upper triangle is masked, drawn grey as in the chapters), and
each row is a softmax, so its cells sum to 1. The output is deterministic (no dates, fixed ids),
so re-running it changes nothing unless this script changes.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "images"
N = 6
MASK = "#d9d9d9"


def attention() -> np.ndarray:
    """Causal softmax rows: each query looks mostly at itself and at the token before it."""
    scores = np.full((N, N), -np.inf)
    for q in range(N):
        for k in range(q + 1):
            scores[q, k] = 2.2 if k == q else (1.4 if k == q - 1 else 0.2 * k)
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True)


def draw_grid(ax, weights: np.ndarray, gap: float = 0.08, radius: float = 0.12) -> None:
    cmap = colormaps["viridis"]
    for q in range(N):
        for k in range(N):
            color = cmap(0.15 + 0.85 * weights[q, k]) if k <= q else MASK
            ax.add_patch(
                FancyBboxPatch(
                    (k + gap / 2, N - 1 - q + gap / 2),
                    1 - gap,
                    1 - gap,
                    boxstyle=f"round,pad=0,rounding_size={radius}",
                    facecolor=color,
                    edgecolor="none",
                )
            )
    ax.set_xlim(0, N)
    ax.set_ylim(0, N)
    ax.set_aspect("equal")
    ax.axis("off")


def logo(path: Path) -> None:
    """The site's logo: the map and the title beside it (SVG, text as paths)."""
    fig = Figure(figsize=(4.0, 1.3))
    ax = fig.add_axes((0.02, 0.06, 0.27, 0.88))
    draw_grid(ax, attention())
    fig.text(0.33, 0.60, "Attention", fontsize=24, fontweight="bold", color="#2b2d42", va="center")
    fig.text(0.33, 0.25, "Zero To One", fontsize=17, color="#21918c", va="center")
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "attention-zero-to-one"}):
        fig.savefig(path, format="svg", transparent=True, metadata={"Date": None})


def favicon(path: Path) -> None:
    """The map alone, 64 x 64 pixels."""
    fig = Figure(figsize=(1, 1), dpi=64)
    ax = fig.add_axes((0.03, 0.03, 0.94, 0.94))
    draw_grid(ax, attention(), gap=0.14, radius=0.2)
    fig.savefig(path, format="png", transparent=True, metadata={"Software": None})


def main() -> None:
    OUT.mkdir(exist_ok=True)
    logo(OUT / "logo.svg")
    favicon(OUT / "favicon.png")
    for name in ("logo.svg", "favicon.png"):
        print(f"wrote images/{name} ({(OUT / name).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
