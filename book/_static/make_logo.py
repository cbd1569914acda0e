"""Draws the book's logo and favicon (a 3x3 kernel on a 5x5 input, and a check mark).

Run: .venv/bin/python book/_static/make_logo.py   (writes logo.png, logo.svg, favicon.png next to this file)
"""
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

HERE = Path(__file__).resolve().parent


def draw(path, size, dpi=100, text=True):
    fig = plt.figure(figsize=(size, size), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, 1]); ax.set_xlim(0, 6); ax.set_ylim(0, 6); ax.axis("off")
    # a 5x5 input grid
    for i in range(5):
        for j in range(5):
            ax.add_patch(Rectangle((0.5 + i, 0.5 + j), 1, 1, facecolor="#e8eef7", edgecolor="#7a8fb0", lw=1.2))
    # the 3x3 kernel window
    ax.add_patch(Rectangle((0.5, 2.5), 3, 3, facecolor="#3b6fb6", alpha=0.85, edgecolor="#1d3b66", lw=3))
    # the check mark
    ax.plot([3.0, 3.9, 5.6], [1.9, 0.9, 3.6], color="#1f9d55", lw=9 * size / 2, solid_capstyle="round", solid_joinstyle="round")
    fig.savefig(path, transparent=True)
    plt.close(fig)

draw(HERE / "logo.png", 1.4, dpi=100)
draw(HERE / "favicon.png", 0.64, dpi=50)
draw(HERE / "logo.svg", 2.0)
