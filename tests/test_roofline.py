"""Chapter 12: the roofline model and the cost-model time (convbook.roofline)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from convbook import roofline
from convbook.roofline import (CPU_ASSUMED, GPU_DATASHEETS, Machine, attainable, bound_kind, fraction_of_roofline,
                               intensity, predict_time, prediction_error, ridge_point)
from tests.planting import Plant, planted_failure_test

pos = st.fractions(min_value=Fraction(1, 1000), max_value=1000)


def test_worked_example():
    # 2 GFLOP moving 1 GB on a 100 GFLOP/s, 10 GB/s machine: I = 2 < ridge 10, memory bound, 0.1 s
    f, q, p, b = 2e9, 1e9, 100e9, 10e9
    assert intensity(f, q) == 2.0 and ridge_point(p, b) == 10.0
    assert attainable(2.0, p, b) == 20e9 and bound_kind(f, q, p, b) == "memory"
    assert predict_time(f, q, p, b) == pytest.approx(0.1)
    assert fraction_of_roofline(f, q, 0.4, p, b) == pytest.approx(0.25)
    assert prediction_error(f, q, 0.4, p, b) == pytest.approx(-0.75)
    assert predict_time(f, q, p, b, overhead=1e-5) == pytest.approx(0.10001)
    assert bound_kind(1e12, 1e9, p, b) == "compute"


@given(f=pos, q=pos, p=pos, b=pos)
def test_time_and_rate_are_the_same_bound(f, q, p, b):
    t = predict_time(f, q, p, b)
    assert t == f / attainable(f / q, p, b) == max(f / p, q / b)
    assert attainable(f / q, p, b) <= p and attainable(f / q, p, b) <= (f / q) * b
    measured = 2 * t
    assert fraction_of_roofline(f, q, measured, p, b) == Fraction(1, 2)
    assert prediction_error(f, q, measured, p, b) == Fraction(-1, 2)


def test_machines_are_positive_and_labelled():
    assert CPU_ASSUMED.source.startswith("assumption")
    assert ridge_point(CPU_ASSUMED.peak_flops, CPU_ASSUMED.bandwidth) == pytest.approx(4.16)
    assert roofline.cpu_machine(2).peak_flops == 2 * CPU_ASSUMED.peak_flops
    with pytest.raises(ValueError, match="cores must be"):
        roofline.cpu_machine(0)
    for m in GPU_DATASHEETS.values():
        assert m.peak_flops > 1e13 and m.bandwidth > 1e12 and "datasheet" in m.source


def test_invalid_inputs():
    with pytest.raises(ValueError, match="peak must be > 0"):
        attainable(1.0, 0, 1.0)
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        ridge_point(1.0, -2.0)
    with pytest.raises(ValueError, match="intensity must be a positive number"):
        attainable("high", 1.0, 1.0)
    with pytest.raises(ValueError, match="bytes must be > 0"):
        intensity(1.0, 0)
    with pytest.raises(ValueError, match="overhead must be >= 0"):
        predict_time(1, 1, 1, 1, overhead=-1)
    with pytest.raises(ValueError, match="seconds must be > 0"):
        fraction_of_roofline(1, 1, 0, 1, 1)
    with pytest.raises(ValueError, match="seconds must be > 0"):
        prediction_error(1, 1, 0, 1, 1)
    with pytest.raises(ValueError, match="peak_flops must be > 0"):
        Machine("m", 0, 1, "s")


def test_plot_roofline_draws_roof_and_points():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = roofline.plot_roofline(CPU_ASSUMED, [(2.0, 1e9, "a"), (50.0, 3e10, "b")])
    assert len(ax.lines) == 4  # roof, ridge line, two points
    plt.close("all")


def test_streaming_schedule_reaches_the_roof():
    """Regression: the roof was once checked only against sympy's Min of the same formula."""
    finish, mem, cmp_ = roofline.simulate_streaming(Fraction(8), Fraction(2), Fraction(2), Fraction(1), 1)
    assert (finish, mem, cmp_) == (6, 2, 4)  # load 2 s, then compute 4 s
    finish, _, _ = roofline.simulate_streaming(Fraction(8), Fraction(2), Fraction(2), Fraction(1), 4)
    assert finish == Fraction(9, 2)  # 0.5 s to load the first piece, then 4 s of compute
    with pytest.raises(ValueError, match="chunks"):
        roofline.simulate_streaming(1, 1, 1, 1, 0)


_ORIG_PREDICT = roofline.predict_time


PLANTS = [
    Plant("bench.roofline-bound", "max instead of min", {"convbook.roofline:attainable": lambda i, p, b: max(p, i * b)}),
    Plant("bench.roofline-bound", "ridge point inverted", {"convbook.roofline:ridge_point": lambda p, b: b / p}),
    Plant("bench.roofline-bound", "no compute roof", {"convbook.roofline:attainable": lambda i, p, b: i * b}, parameter="P"),
    Plant("bench.roofline-bound", "bandwidth left out of the memory roof",
          {"convbook.roofline:attainable": lambda i, p, b: min(p, i)}, parameter="B"),
    Plant("bench.roofline-bound", "intensity ignored", {"convbook.roofline:attainable": lambda i, p, b: min(p, b)},
          parameter="I"),
    Plant("bench.roofline-time", "sum instead of max",
          {"convbook.roofline:predict_time": lambda f, q, p, b, overhead=0: f / p + q / b + overhead}),
    Plant("bench.roofline-time", "time from the bytes alone",
          {"convbook.roofline:predict_time": lambda f, q, p, b, overhead=0: q / b + overhead}, parameter="F"),
    Plant("bench.roofline-time", "time from the FLOPs alone",
          {"convbook.roofline:predict_time": lambda f, q, p, b, overhead=0: f / p + overhead}, parameter="Q"),
    Plant("bench.roofline-time", "peak ignored (1 FLOP/s)",
          {"convbook.roofline:predict_time": lambda f, q, p, b, overhead=0: _ORIG_PREDICT(f, q, 1, b, overhead)},
          parameter="P"),
    Plant("bench.roofline-time", "bandwidth ignored (1 byte/s)",
          {"convbook.roofline:predict_time": lambda f, q, p, b, overhead=0: _ORIG_PREDICT(f, q, p, 1, overhead)},
          parameter="B"),
    Plant("bench.roofline-time", "error relative to the prediction",
          {"convbook.roofline:prediction_error": lambda f, q, s, p, b, overhead=0:
           (predict_time(f, q, p, b, overhead) - s) / predict_time(f, q, p, b, overhead)}),
]

test_planted_failure = planted_failure_test(PLANTS)


def test_comparison_rows_put_the_reference_on_the_same_roof():
    from convbook import bench

    rec = bench.run_case(bench.Case("cmp", lambda device: bench.Prepared(
        lambda: torch.ones(64).sum(), 10**6, 10**3, "float32", reference=lambda: torch.ones(64).sum(),
        reference_label="ref")), "cpu", warmup=1, repeats=3, min_sample_time=1e-4)
    rec["params"] = {"algorithm": "toy"}
    data = {"cases": [rec], "device": {"name": "cpu"}, "suite": "x",
            "roofline": {"peak_flops": 1e10, "bandwidth": 1e9, "threads": 1, "gemm": {"op": "mm", "samples_s": [1.0]},
                         "copy": {"op": "copy", "samples_s": [1.0]}}}
    (row,) = roofline.comparison_rows(data)
    assert row["algorithm"] == "toy" and row["attainable"] == min(1e10, 1e3 * 1e9)
    assert row["reference_achieved"] == pytest.approx(1e6 / float(np.median(rec["comparison"]["reference_samples_s"])))
    assert row["reference_fraction"] == pytest.approx(row["reference_achieved"] / row["attainable"])
    with pytest.raises(ValueError, match="records no measured roofline"):
        roofline.comparison_rows({**data, "roofline": None})
