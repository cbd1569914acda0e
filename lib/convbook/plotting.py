"""Small helpers shared by the chapters' figures.

A panel whose image takes one value everywhere (a coverage of 1, a uniform overlap, a full connectivity
matrix) looks exactly like a plot that failed to draw. :func:`mark_uniform` makes such a panel say what it
shows: it draws the cell grid and a label with the value.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mark_uniform"]


def mark_uniform(ax, image, label: str | None = None, *, grid_colour: str = "white") -> bool:
    """If every entry of ``image`` (2-D) is equal, draw its cell grid and a centred label on ``ax``.

    The label defaults to ``"every entry = VALUE"``. Returns whether the image was uniform (and marked).
    Non-uniform images are left as they are.
    """
    a = np.asarray(image, dtype=float)
    if a.ndim != 2:
        raise ValueError(f"mark_uniform needs a 2-D image, got shape {a.shape}")
    if a.size == 0 or not np.all(a == a.flat[0]):
        return False
    rows, cols = a.shape
    width = 2.0 if max(rows, cols) <= 24 else 1.0
    for r in range(rows + 1):
        ax.axhline(r - 0.5, color=grid_colour, lw=width, alpha=0.9)
    for c in range(cols + 1):
        ax.axvline(c - 0.5, color=grid_colour, lw=width, alpha=0.9)
    value = a.flat[0]
    text = label if label is not None else f"every entry = {value:g}"
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=10,
            bbox={"boxstyle": "round,pad=0.4", "facecolor": "white", "edgecolor": "0.4"})
    return True
