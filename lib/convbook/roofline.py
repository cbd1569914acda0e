"""Chapter 12: the roofline model and the cost model's time prediction.

The roofline model (Williams, Waterman & Patterson 2009) bounds the rate at which a kernel
can do arithmetic on a machine with peak arithmetic rate ``P`` (FLOP/s) and memory
bandwidth ``B`` (byte/s).  A kernel that does ``F`` FLOPs and must move ``Q`` bytes has
*arithmetic intensity* ``I = F / Q`` (FLOP/byte); moving its bytes takes at least ``Q / B``
seconds, computing at least ``F / P``, so

    time      ≥ max(F / P, Q / B)                       (the cost model's prediction)
    FLOP/s    ≤ min(P, I · B)                           (the attainable rate, the "roof")

and the two are the same statement: ``F / max(F/P, Q/B) = min(P, F B / Q)``.  The *ridge
point* ``I* = P / B`` separates memory-bound kernels (``I < I*``) from compute-bound ones.
The *fraction of the roofline* a measurement reaches is ``achieved / attainable``; because
``achieved = F / t_measured`` and ``attainable = F / t_predicted`` it equals
``t_predicted / t_measured``, and the cost model's relative error
``(t_predicted - t_measured) / t_measured`` is that fraction minus one.

Rules: FLOPs, bytes, peak and bandwidth must be positive (``ValueError`` otherwise).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from fractions import Fraction

import sympy as sp

from .claims import Tally, claim

__all__ = [
    "Machine",
    "CPU_ASSUMED",
    "cpu_machine",
    "measured_machine",
    "GPU_DATASHEETS",
    "intensity",
    "attainable",
    "ridge_point",
    "predict_time",
    "fraction_of_roofline",
    "prediction_error",
    "bound_kind",
    "simulate_streaming",
    "roofline_rows",
    "comparison_rows",
    "format_roofline_rows",
    "plot_roofline",
]


def _positive(name: str, value) -> None:
    try:
        ok = value > 0
    except TypeError:
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not ok:
        raise ValueError(f"{name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class Machine:
    """A roofline: peak arithmetic rate (FLOP/s), memory bandwidth (byte/s) and where they come from."""

    name: str
    peak_flops: float
    bandwidth: float
    source: str

    def __post_init__(self):
        _positive("peak_flops", self.peak_flops)
        _positive("bandwidth", self.bandwidth)


def cpu_machine(cores: int = 1, ghz: float = 2.6, flops_per_cycle: int = 32, bandwidth: float = 20e9) -> Machine:
    """A CPU roofline from *stated assumptions*: ``P = cores · GHz · FLOP/cycle``, ``B`` given.

    Defaults describe the book's build machine as assumed, not measured: 2.6 GHz, 32 FP32
    FLOP per cycle and core (two 256-bit FMA pipes: 2 × 8 lanes × 2 FLOP) and 20 GB/s of
    DRAM bandwidth for a small share of a server socket.
    """
    if not isinstance(cores, int) or cores < 1:
        raise ValueError(f"cores must be an int >= 1, got {cores!r}")
    return Machine(
        name=f"{cores}-core x86 CPU (assumed)",
        peak_flops=cores * ghz * 1e9 * flops_per_cycle,
        bandwidth=bandwidth,
        source=f"assumption: {cores} core(s) × {ghz} GHz × {flops_per_cycle} FP32 FLOP/cycle; {bandwidth / 1e9:g} GB/s DRAM bandwidth",
    )


def measured_machine(result: dict) -> Machine:
    """The roofline a CPU bench result file recorded: ``P`` from its SGEMM, ``B`` from its copy
    (``convbook.bench.measure_cpu_roofline``), with the threads they used. ``ValueError`` when
    the result records none (a GPU file, or one recorded before the roofline was measured)."""
    roof = result.get("roofline") if isinstance(result, dict) else None
    if not roof:
        suite = result.get("suite", "?") if isinstance(result, dict) else "?"
        raise ValueError(f"result for suite {suite!r} records no measured roofline")
    threads = roof["threads"]
    return Machine(
        name=f"{result['device']['name']}, {threads} thread{'s' if threads != 1 else ''} (measured)",
        peak_flops=float(roof["peak_flops"]),
        bandwidth=float(roof["bandwidth"]),
        source=f"measured: P from {roof['gemm']['op']} (median of {len(roof['gemm']['samples_s'])}), "
               f"B from {roof['copy']['op']} (median of {len(roof['copy']['samples_s'])})",
    )


#: One core of the build machine, as assumed by :func:`cpu_machine`.
CPU_ASSUMED = cpu_machine(1)

#: Nominal peaks from NVIDIA's datasheets (SXM parts, dense, no sparsity); nominal figures
#: are upper bounds that measured kernels rarely reach, which is what the roofline is for.
GPU_DATASHEETS = {
    "H100 SXM (fp32)": Machine("H100 SXM (fp32)", 67e12, 3.35e12, "NVIDIA H100 datasheet: FP32 67 TFLOP/s, HBM3 3.35 TB/s"),
    "H100 SXM (tf32)": Machine("H100 SXM (tf32)", 494.7e12, 3.35e12, "NVIDIA H100 datasheet: TF32 tensor core 989 TFLOP/s with sparsity, half dense"),
    "H100 SXM (bf16)": Machine("H100 SXM (bf16)", 989.4e12, 3.35e12, "NVIDIA H100 datasheet: BF16 tensor core 1979 TFLOP/s with sparsity, half dense"),
    "H200 SXM (fp32)": Machine("H200 SXM (fp32)", 67e12, 4.8e12, "NVIDIA H200 datasheet: FP32 67 TFLOP/s, HBM3e 4.8 TB/s"),
}


def intensity(flops: float, nbytes: float) -> float:
    """Arithmetic intensity ``I = F / Q`` in FLOP per byte moved (both positive)."""
    _positive("flops", flops)
    _positive("bytes", nbytes)
    return flops / nbytes


def attainable(arith_intensity, peak, bandwidth):
    """The roof: attainable FLOP/s ``min(P, I · B)`` for intensity ``I`` (FLOP/byte)."""
    _positive("intensity", arith_intensity)
    _positive("peak", peak)
    _positive("bandwidth", bandwidth)
    return min(peak, arith_intensity * bandwidth)


def ridge_point(peak, bandwidth):
    """The intensity ``I* = P / B`` where the memory roof ``I · B`` meets the compute roof ``P``."""
    _positive("peak", peak)
    _positive("bandwidth", bandwidth)
    return peak / bandwidth


def predict_time(flops, nbytes, peak, bandwidth, overhead=0):
    """Cost-model time ``max(F / P, Q / B) + t₀`` in seconds (``t₀`` a fixed launch overhead, ≥ 0)."""
    _positive("flops", flops)
    _positive("bytes", nbytes)
    _positive("peak", peak)
    _positive("bandwidth", bandwidth)
    if overhead < 0:
        raise ValueError(f"overhead must be >= 0 seconds, got {overhead}")
    return max(flops / peak, nbytes / bandwidth) + overhead


def fraction_of_roofline(flops, nbytes, seconds, peak, bandwidth):
    """Achieved FLOP/s over the attainable FLOP/s: ``(F / t) / min(P, (F/Q) · B)`` (in (0, 1] unless the model is wrong)."""
    _positive("seconds", seconds)
    return (flops / seconds) / attainable(intensity(flops, nbytes), peak, bandwidth)


def prediction_error(flops, nbytes, seconds, peak, bandwidth, overhead=0):
    """Relative error of the cost model: ``(t_predicted - t_measured) / t_measured`` (negative: the model is optimistic)."""
    _positive("seconds", seconds)
    return (predict_time(flops, nbytes, peak, bandwidth, overhead) - seconds) / seconds


def bound_kind(flops, nbytes, peak, bandwidth) -> str:
    """``'memory'`` when the intensity is below the ridge point ``P / B``, else ``'compute'``."""
    return "memory" if intensity(flops, nbytes) < ridge_point(peak, bandwidth) else "compute"


def simulate_streaming(flops, nbytes, peak, bandwidth, chunks: int) -> tuple:
    """Finish time of a double-buffered streaming schedule, event by event (exact for Fractions).

    The kernel is cut into ``chunks`` equal pieces; piece ``i`` must be loaded (``Q/(n B)``
    seconds on the memory link) before it is computed (``F/(n P)`` seconds on the arithmetic
    units); the link loads piece ``i + 1`` while piece ``i`` is computed. Each unit does one
    thing at a time. Returns ``(finish_time, memory_busy, compute_busy)``; no schedule can
    finish before ``max(memory_busy, compute_busy)``, since each unit must do all its work.
    """
    if not isinstance(chunks, int) or chunks < 1:
        raise ValueError(f"chunks must be an int >= 1, got {chunks!r}")
    for name, v in (("flops", flops), ("bytes", nbytes), ("peak", peak), ("bandwidth", bandwidth)):
        _positive(name, v)
    load, work = nbytes / (chunks * bandwidth), flops / (chunks * peak)
    load_done = compute_done = 0 * load
    for _ in range(chunks):
        load_done = load_done + load                            # the link loads piece after piece
        compute_done = max(compute_done, load_done) + work      # compute waits for its piece
    return compute_done, chunks * load, chunks * work


def roofline_rows(cases, machine: Machine, overhead: float = 0.0) -> list[dict]:
    """Place measured cases (bench result records with status ``'ok'``) on ``machine``'s roofline.

    Per case: intensity ``F/Q``, bound kind, achieved and attainable FLOP/s, fraction of the
    roofline, predicted and measured time and the relative prediction error.
    """
    from .bench import case_label  # bench imports this module; the label lives with the result format

    rows = []
    for c in cases:
        if c.get("status") != "ok":
            continue
        f, q, t = c["flops"], c["bytes"], c["median_s"]
        rows.append({
            "case": case_label(c),
            "intensity": intensity(f, q),
            "bound": bound_kind(f, q, machine.peak_flops, machine.bandwidth),
            "achieved": f / t,
            "attainable": attainable(intensity(f, q), machine.peak_flops, machine.bandwidth),
            "fraction": fraction_of_roofline(f, q, t, machine.peak_flops, machine.bandwidth),
            "predicted_s": predict_time(f, q, machine.peak_flops, machine.bandwidth, overhead),
            "measured_s": t,
            "error": prediction_error(f, q, t, machine.peak_flops, machine.bandwidth, overhead),
        })
    return rows


def comparison_rows(result: dict, machine: Machine | None = None) -> list[dict]:
    """:func:`roofline_rows` of a result's comparison cases (an algorithm timed against a
    reference, ``convbook.bench``), on ``machine`` (default: the roofline the result measured),
    each row also with the case's ``algorithm`` and the reference's rate on the same work,
    ``reference_achieved = F / median(reference samples)``, and
    ``reference_fraction = reference_achieved / attainable``."""
    from .bench import median_iqr

    machine = machine or measured_machine(result)
    cases = [c for c in result["cases"] if c.get("status") == "ok" and "comparison" in c]
    rows = roofline_rows(cases, machine)
    for row, c in zip(rows, cases):
        ref = c["flops"] / median_iqr(c["comparison"]["reference_samples_s"])[0]
        row.update(algorithm=c["params"].get("algorithm", c["name"]), reference_achieved=ref,
                   reference_fraction=ref / row["attainable"])
    return rows


def format_roofline_rows(rows) -> str:
    """A fixed-width table of :func:`roofline_rows`."""
    head = ("case", "FLOP/B", "bound", "GFLOP/s", "roof GFLOP/s", "fraction", "pred ms", "meas ms", "error")
    table = [head] + [(r["case"], f"{r['intensity']:.1f}", r["bound"], f"{r['achieved'] / 1e9:.2f}",
                       f"{r['attainable'] / 1e9:.1f}", f"{r['fraction']:.3f}", f"{r['predicted_s'] * 1e3:.4f}",
                       f"{r['measured_s'] * 1e3:.3f}", f"{r['error']:+.0%}") for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(len(head))]
    return "\n".join("  ".join([t[0].ljust(widths[0])] + [t[i].rjust(widths[i]) for i in range(1, len(t))]) for t in table)


def plot_roofline(machine: Machine, points=(), ax=None, title: str | None = None):
    """Draw ``min(P, I·B)`` on log-log axes and the measured ``(intensity, FLOP/s, label)`` points (one marker per label)."""
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    ridge = ridge_point(machine.peak_flops, machine.bandwidth)
    xs = [p[0] for p in points] + [ridge]
    lo, hi = min(xs) / 4, max(xs) * 4
    grid = np.logspace(np.log10(lo), np.log10(hi), 200)
    ax.loglog(grid, np.minimum(machine.peak_flops, grid * machine.bandwidth), "k-", lw=2, label="roof min(P, I·B)")
    ax.axvline(ridge, color="0.6", ls=":", lw=1)
    ax.text(ridge, machine.peak_flops * 1.15, f"ridge {ridge:.1f} FLOP/B", ha="center", fontsize=8)
    markers = itertools.cycle("os^vDP*X<>")
    groups: dict = {}
    for x, y, label in points:  # one marker and legend entry per label
        groups.setdefault(label, []).append((x, y))
    for label, xy in groups.items():
        ax.loglog([p[0] for p in xy], [p[1] for p in xy], next(markers), ls="none", label=label, alpha=0.8)
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("FLOP/s")
    ax.set_title(title or machine.name)
    ax.legend(fontsize=7, loc="best", ncol=2)
    return ax


# --------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------


_GRID = [Fraction(n, d) for n in (1, 2, 3, 5, 8, 13) for d in (1, 4, 7)]


@claim(
    "bench.roofline-bound",
    title="The roofline bound and its ridge point",
    chapter=12,
    statement="For every intensity I = F/Q > 0, peak P > 0 and bandwidth B > 0, no schedule reaches more than min(P, I·B) FLOP/s and a streaming schedule comes arbitrarily close to it (within a factor 1 + 2/n with n pieces); the two roofs meet at the ridge point I* = P/B, below which the memory link is the unit that limits the kernel.",
    parameters=("I", "P", "B"),
    reference="a simulated double-buffered streaming schedule in exact rational arithmetic",
    sympy_role="derived",
)
def check_roofline_bound(device: str = "cpu"):
    t = Tally()
    F, Q, P, B, I = sp.symbols("F Q P B I", positive=True)
    # time to compute and time to move the bytes, from the definitions of P and B
    t_compute, t_memory = F / P, Q / B
    # memory bound: the byte time dominates; the rate F / t_memory rewritten in I = F/Q
    mem_rate = sp.simplify((F / t_memory).subs(F, I * Q))
    t.exact(sp.simplify(mem_rate - I * B) == 0, "memory-bound rate is I·B")
    t.exact(sp.simplify(F / t_compute - P) == 0, "compute-bound rate is P")
    ridge = sp.solve(sp.Eq(mem_rate, P), I)
    t.exact(len(ridge) == 1 and sp.simplify(ridge[0] - P / B) == 0, f"ridge point {ridge}")
    # the roof against schedules: every kernel of F = I·Q FLOPs over Q bytes
    for p_, b_, i_ in itertools.product(_GRID[::3], _GRID[1::6], _GRID[::2]):
        q_ = Fraction(7)
        f_ = i_ * q_
        roof = attainable(i_, p_, b_)
        for n in (1, 4, 64):
            finish, mem_busy, cmp_busy = simulate_streaming(f_, q_, p_, b_, n)
            rate = f_ / finish
            t.exact(rate <= roof and rate * (1 + Fraction(2, n)) >= roof,
                    f"I={i_}, P={p_}, B={b_}, {n} pieces: simulated {rate} vs roof {roof}")
        limiter = "memory" if mem_busy > cmp_busy else "compute"
        t.exact(bound_kind(f_, q_, p_, b_) == limiter, f"bound kind at I={i_}, P={p_}, B={b_}: simulated {limiter}")
        r = ridge_point(p_, b_)
        t.exact((i_ < r) == (limiter == "memory"), f"ridge {r} at I={i_}: simulated {limiter}")
    return t.verdict("sympy derivation from the definitions, then exact rational grid vs simulated streaming schedules",
                     case_unit="cases")


@claim(
    "bench.roofline-time",
    title="Cost-model time, fraction of the roofline and prediction error",
    chapter=12,
    statement="For every F, Q, P, B > 0, the cost-model time max(F/P, Q/B) is the least time any schedule can take (a streaming schedule with n pieces comes within a factor 1 + 2/n) and equals F divided by the roofline bound min(P, (F/Q)·B), so a measurement's fraction of its roofline bound equals t_predicted / t_measured and the model's relative error is that fraction minus one.",
    parameters=("F", "Q", "P", "B"),
    reference="a simulated double-buffered streaming schedule in exact rational arithmetic",
    sympy_role="proven for symbolic sizes",
)
def check_roofline_time(device: str = "cpu"):
    t = Tally()
    F, Q, P, B, T = sp.symbols("F Q P B T", positive=True)
    # in each regime (memory bound: F·B <= P·Q; compute bound: otherwise), build both sides
    for roof, t_pred in ((F * B / Q, Q / B), (P, F / P)):
        t.exact(sp.simplify(F / roof - t_pred) == 0, f"F / {roof} = {t_pred}")
        frac = (F / T) / roof
        t.exact(sp.simplify(frac - t_pred / T) == 0, "fraction = t_pred / t_meas")
        t.exact(sp.simplify((t_pred - T) / T - (frac - 1)) == 0, "error = fraction - 1")
    # the regime condition: Q/B >= F/P  <=>  F·B <= P·Q
    t.exact(sp.simplify((Q / B - F / P) * B * P - (P * Q - F * B)) == 0, "regime condition")
    values = [Fraction(n, d) for n in (1, 2, 3, 7, 11) for d in (1, 3, 10)]
    for f_, q_, p_, b_ in itertools.product(values[::2], values[1::3], values[::4], values[2::5]):
        pred = predict_time(f_, q_, p_, b_)
        for n in (1, 8, 64):
            finish, mem_busy, cmp_busy = simulate_streaming(f_, q_, p_, b_, n)
            t.exact(max(mem_busy, cmp_busy) == pred and pred <= finish <= pred * (1 + Fraction(2, n)),
                    f"predict_time(F={f_}, Q={q_}, P={p_}, B={b_}) = {pred}; schedule of {n} pieces {finish}")
        t.exact(pred == f_ / attainable(f_ / q_, p_, b_), f"time = F / roof at F={f_}, Q={q_}, P={p_}, B={b_}")
        tm = finish * 3  # a "measured" time above the bound
        frac = fraction_of_roofline(f_, q_, tm, p_, b_)
        err = prediction_error(f_, q_, tm, p_, b_)
        t.exact(frac == pred / tm and err == frac - 1 and 0 < frac <= 1, f"fraction {frac}, error {err}")
    return t.verdict("sympy in both regimes, then exact rational grid vs simulated streaming schedules", case_unit="cases")
