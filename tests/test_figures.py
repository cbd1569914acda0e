"""No blank figures: every PNG stored in a notebook shows something, and so does each of its panels.

A figure is evidence too: a plot whose pixels all take one value, or a panel (an axes box) that one colour
fills, shows nothing — a reader cannot tell it from a plot that failed to draw — although the notebook ran and nbval (which does not compare images) passes. This test
reads the PNG outputs stored (base64) in every executed notebook and fails on

* a blank image: all its pixels take one value;
* a blank panel: a large connected block of non-background pixels (an axes with its image or its curves)
  whose inside, a few pixels in from its frame, is filled by one colour — at least 93 % of it when that colour
  is not the background (a heat map of one value), at least 99.8 % when it is (empty axes).
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "book").glob("*.ipynb"))

MIN_PANEL_FRACTION = 0.04  # a panel covers at least 4 % of the figure (a legend or a label is smaller)
MIN_PANEL_SIDE = 60  # pixels
INSET = 6  # pixels in from the panel's frame: spines and tick marks are not its content
ONE_COLOUR = 0.93  # a coloured panel this full of one colour is blank (grid lines may cross it); the fullest
# panel with content in the book is 87 % one colour
EMPTY = 0.998  # a panel of background this empty is blank (a plotted line covers more)


@dataclass(frozen=True)
class Figure:
    notebook: str
    cell: int
    index: int
    pixels: np.ndarray  # (H, W, 3) uint8

    def __str__(self) -> str:
        return f"{self.notebook} cell {self.cell} figure {self.index}"


def stored_figures(paths=NOTEBOOKS) -> list[Figure]:
    """Every image/png output stored in the notebooks, decoded to RGB."""
    out = []
    for path in paths:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
        k = 0
        for i, cell in enumerate(nb.get("cells", [])):
            for output in cell.get("outputs", []):
                data = output.get("data", {}).get("image/png")
                if data is None:
                    continue
                raw = base64.b64decode(data if isinstance(data, str) else "".join(data))
                rgb = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
                out.append(Figure(Path(path).relative_to(ROOT).as_posix() if Path(path).is_relative_to(ROOT) else str(path), i, k, rgb))
                k += 1
    return out


def _packed(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def blank_reasons(rgb: np.ndarray) -> list[str]:
    """Why an image is blank (empty list: it is not)."""
    px = _packed(rgb)
    values = np.unique(px)
    if values.size == 1:
        return [f"every pixel of the {rgb.shape[1]}x{rgb.shape[0]} image has the value #{int(values[0]):06x}"]
    border = np.concatenate([px[0], px[-1], px[:, 0], px[:, -1]])
    vals, counts = np.unique(border, return_counts=True)
    background = vals[np.argmax(counts)]
    labels, n = ndimage.label(px != background)
    reasons = []
    h, w = px.shape
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        y, x = box
        bh, bw = y.stop - y.start, x.stop - x.start
        if bh < MIN_PANEL_SIDE or bw < MIN_PANEL_SIDE or bh * bw < MIN_PANEL_FRACTION * h * w:
            continue
        inside = px[y.start + INSET : y.stop - INSET, x.start + INSET : x.stop - INSET]
        if inside.size == 0:
            continue
        v, c = np.unique(inside, return_counts=True)
        top = int(np.argmax(c))
        share = c[top] / inside.size
        limit = EMPTY if v[top] == background else ONE_COLOUR
        if share >= limit:
            what = "empty (background)" if v[top] == background else f"one colour #{int(v[top]):06x}"
            reasons.append(
                f"the panel at x {x.start}-{x.stop}, y {y.start}-{y.stop} is blank: {what} fills {share:.1%} of it"
            )
    return reasons


FIGURES = stored_figures()


def test_the_notebooks_store_figures():
    assert len(FIGURES) >= 10, "the chapters' figures were not found: are the notebooks executed?"


@pytest.mark.parametrize("figure", FIGURES, ids=str)
def test_no_blank_figure_or_panel(figure):
    reasons = blank_reasons(figure.pixels)
    assert not reasons, f"{figure}: " + "; ".join(reasons)


# --------------------------------------------------------------------------- the detector itself


def _axes(fill, size=(200, 300), lines=()):
    """A white figure with one framed panel (black spines) filled with ``fill``, plus optional lines."""
    img = np.full((*size, 3), 255, np.uint8)
    img[30:170, 40:260] = fill
    img[30, 40:260] = img[169, 40:260] = 0
    img[30:170, 40] = img[30:170, 259] = 0
    for row, colour in lines:
        img[row, 42:258] = colour
    return img


def test_detector_finds_a_one_value_image():
    assert blank_reasons(np.full((50, 80, 3), 255, np.uint8))


def test_detector_finds_a_panel_of_one_colour_even_with_grid_lines():
    reasons = blank_reasons(_axes((0, 0, 0), lines=[(70, (200, 0, 0)), (120, (200, 0, 0))]))
    assert reasons and "one colour #000000" in reasons[0]


def test_detector_finds_an_empty_panel():
    assert blank_reasons(_axes((255, 255, 255)))


def test_detector_passes_a_panel_with_content():
    heat = _axes((0, 0, 0))
    heat[31:100, 41:150] = (240, 200, 40)  # a second value over a third of the panel
    assert blank_reasons(heat) == []
    line = _axes((255, 255, 255), lines=[(60 + r, (30, 90, 200)) for r in range(2)])  # one curve
    assert blank_reasons(line) == []
