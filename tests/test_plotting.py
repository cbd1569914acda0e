"""mark_uniform: a one-valued panel says what it shows; other panels are left alone."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from convbook.plotting import mark_uniform  # noqa: E402


def test_uniform_panel_gets_grid_and_label():
    fig, ax = plt.subplots()
    ax.imshow(np.ones((3, 4)))
    assert mark_uniform(ax, np.ones((3, 4)))
    assert [t.get_text() for t in ax.texts] == ["every entry = 1"]
    assert len(ax.lines) == (3 + 1) + (4 + 1)
    plt.close(fig)


def test_non_uniform_panel_is_left_alone():
    fig, ax = plt.subplots()
    img = np.eye(3)
    ax.imshow(img)
    assert not mark_uniform(ax, img, "never shown")
    assert len(ax.texts) == 0 and len(ax.lines) == 0
    plt.close(fig)


def test_needs_a_2d_image():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="2-D"):
        mark_uniform(ax, np.ones(3))
    plt.close(fig)
