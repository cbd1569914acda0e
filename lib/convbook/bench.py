"""Chapter 12: the benchmark harness — suites of cases, timing, statistics, result files.

*Measuring* (``python -m convbook bench``, run on the machine being measured) is kept apart
from *showing* (chapter 12 renders the JSON files this module writes and never times
anything), so the book's outputs are the same on every machine.

Method (recorded in every result file):

* a **suite** is a named list of :class:`Case` objects; each case builds, on the requested
  device, a zero-argument callable and the FLOP and byte counts of the work it does;
* **warm-up** calls first (they also let ``torch.backends.cudnn.benchmark`` pick its
  algorithms; the setting is recorded);
* timing with PyTorch's ``torch.utils.benchmark.Timer.blocked_autorange`` (or
  ``adaptive_autorange``) — ``time.perf_counter`` on the CPU, synchronised on CUDA — or, on
  CUDA, **CUDA events** around each call with the **L2 cache flushed** (a buffer twice the
  L2 size zeroed) before every timed call, or ``triton.testing.do_bench`` when Triton is
  installed;
* every raw sample is stored; the summary is the **median** and the **interquartile range**
  ``q₃ - q₁`` with quartiles by linear interpolation between order statistics (numpy's
  default);
* achieved rates ``FLOP/s = F / median`` and ``byte/s = Q / median``, where ``F`` counts 2
  FLOPs per multiply-accumulate of convolutions and linear layers (what
  ``torch.utils.flop_counter.FlopCounterMode`` counts) and ``Q`` is the compulsory traffic:
  every layer reads its input and parameters once and writes its output once.

Cases whose implementation module is missing, or that need a device feature the machine
lacks (Triton and TF32 need CUDA), are recorded as *skipped* with the reason.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import functools
import importlib
import json
import math
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .claims import Tally, claim
from .conventions import as_int, as_tuple
from .numerics import generator

__all__ = [
    "SCHEMA_ID",
    "RESULT_SCHEMA",
    "DEFAULT_DIR",
    "Case",
    "Prepared",
    "Skip",
    "SUITES",
    "suite",
    "suite_names",
    "median_iqr",
    "conv_counts",
    "module_counts",
    "time_callable",
    "run_case",
    "run_suite",
    "device_info",
    "result_filename",
    "write_result",
    "validate_result",
    "load_result",
    "load_results",
    "results_by_device",
    "format_provenance",
    "format_cases",
    "relative_rows",
    "format_relative",
    "format_comparisons",
    "comparison_summary",
    "fft_crossover",
    "winograd_tile_misses",
    "plot_comparisons",
    "time_interleaved",
    "measure_cpu_roofline",
    "keep_freed_memory",
    "add_cli",
]

SCHEMA_ID = "convbook.bench/1"
#: Where ``python -m convbook bench`` writes by default (the chapter reads the same folder).
DEFAULT_DIR = pathlib.Path(__file__).resolve().parents[2] / "notebooks" / "data" / "bench"
SIZES = ("small", "full")
METHODS = ("timer", "adaptive", "events", "do_bench")
INTERLEAVED_REPEATS = 15
MIN_SAMPLES, MAX_ROUNDS = 10, 5


# --------------------------------------------------------------------------------------
# Cases and suites
# --------------------------------------------------------------------------------------


class Skip(Exception):
    """Raised by a case's builder when it cannot run here; the message is the recorded reason."""


@dataclass(frozen=True)
class Prepared:
    """A built case: the callable to time and the work it does.

    With a ``reference`` (e.g. ``F.conv2d`` on the same tensors) the two are timed in
    alternation (:func:`time_interleaved`) and the record holds the per-repeat time ratios;
    ``extra`` is recorded as is (a float32 error, the tile a cost model chose, …).
    """

    fn: Callable[[], Any]
    flops: int
    bytes: int
    dtype: str
    reference: Callable[[], Any] | None = None
    reference_label: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    """One timed configuration of a suite.

    ``build(device)`` returns a :class:`Prepared` (or raises :class:`Skip`); ``requires``
    lists ``"module:attribute"`` implementations that must import, ``cuda_only`` is the
    reason recorded when the case is asked to run on a CPU, ``settings`` are the backend
    flags (``tf32``) set while the case runs.
    """

    name: str
    build: Callable[[str], Prepared]
    params: dict = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    cuda_only: str | None = None
    settings: dict = field(default_factory=dict)


def suite_names() -> list[str]:
    """The names of every suite, in the order the chapter discusses them."""
    return list(SUITES)


def suite(name: str, size: str = "small") -> list[Case]:
    """The cases of suite ``name`` at ``size`` ``'small'`` (CPU, CI) or ``'full'`` (the papers' sizes, GPU)."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; known suites: {', '.join(SUITES)}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r}")
    return SUITES[name](size)


# --------------------------------------------------------------------------------------
# Statistics and counts
# --------------------------------------------------------------------------------------


def median_iqr(samples: Sequence[float]) -> tuple[float, float]:
    """Median and interquartile range ``q(0.75) - q(0.25)`` of ``samples``.

    The ``p``-quantile of the sorted samples ``x₀ ≤ … ≤ x_{n-1}`` interpolates linearly at
    position ``h = (n - 1) p``: ``x_⌊h⌋ + (h - ⌊h⌋)(x_⌊h⌋₊₁ - x_⌊h⌋)`` (numpy's default
    ``'linear'`` method). Requires at least one finite sample.
    """
    xs = sorted(float(s) for s in samples)
    if not xs:
        raise ValueError("median_iqr needs at least one sample, got none")
    if not all(math.isfinite(x) for x in xs):
        raise ValueError(f"samples must be finite, got {[x for x in xs if not math.isfinite(x)][:3]}")
    return _quantile(xs, 0.5), _quantile(xs, 0.75) - _quantile(xs, 0.25)


def conv_counts(x_shape: Sequence[int], w_shape: Sequence[int], stride=1, padding=0, dilation=1, groups: int = 1,
                itemsize: int = 4, bias: bool = False) -> tuple[int, int]:
    """FLOPs and compulsory bytes of one 2-D convolution.

    ``FLOPs = 2 · MACs``, ``MACs = B · C_out · H_out · W_out · (C_in / g) · k_h · k_w``;
    ``bytes = itemsize · (|x| + |w| + |b| + |y|)``. Uses ``convbook.cost.conv_macs`` when that
    module is present, the formula above otherwise.
    """
    b, c_in, h, w = (int(v) for v in x_shape)
    c_out, c_in_g, kh, kw = (int(v) for v in w_shape)
    if groups < 1 or c_in % groups or c_out % groups or c_in_g * groups != c_in:
        raise ValueError(f"groups must divide C_in and C_out with weight.shape[1] = C_in/groups; got C_in={c_in}, "
                         f"C_out={c_out}, weight.shape[1]={c_in_g}, groups={groups}")
    s, p, d = (as_tuple(v, 2, name) for v, name in ((stride, "stride"), (padding, "padding"), (dilation, "dilation")))
    ho = (h + 2 * p[0] - d[0] * (kh - 1) - 1) // s[0] + 1
    wo = (w + 2 * p[1] - d[1] * (kw - 1) - 1) // s[1] + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"empty convolution output {ho}x{wo} for input {h}x{w}, kernel {kh}x{kw}, stride {s}, padding {p}, dilation {d}")
    macs = _cost_conv_macs(c_in, c_out, (kh, kw), (h, w), s, p, d, groups)
    if macs is None:
        macs = c_out * ho * wo * c_in_g * kh * kw
    macs *= b
    elems = b * c_in * h * w + c_out * c_in_g * kh * kw + (c_out if bias else 0) + b * c_out * ho * wo
    return 2 * macs, itemsize * elems


def module_counts(model: nn.Module, x_shape: Sequence[int], dtype: torch.dtype = torch.float32) -> tuple[int, int]:
    """FLOPs and compulsory bytes of ``model`` on one input, summed over its layers' calls.

    A view of the book's one model graph: :func:`convbook.cost.graph_counts` (the calls from
    :func:`convbook.graph.trace`, one run on meta tensors, nothing computed). FLOPs are
    ``2 · MACs`` (``torch.utils.flop_counter``'s convention) for every ``Conv1d/2d/3d``, every
    ``ConvTranspose1d/2d/3d`` (``Π n_in · Π k · C_in/g · C_out`` per sample: each input element
    meets each tap once, not scaled by ``Π s``) and every ``Linear`` (``rows · in · out``). Bytes:
    each leaf call reads its input and parameters and writes its output once (``itemsize``
    each). Normalisation, activation and pooling layers move bytes but add no matmul-class
    FLOPs. A layer whose output is a tuple (an LSTM) contributes the bytes of its first tensor
    output.
    """
    from . import cost

    return cost.graph_counts(model, x_shape, dtype)


def time_callable(fn: Callable[[], Any], *, device: str = "cpu", method: str | None = None, warmup: int = 3,
                  min_run_time: float = 0.2, flush_l2: bool = True) -> tuple[list[float], dict]:
    """Time ``fn`` after ``warmup`` calls; returns (seconds per call for every sample, method record).

    ``method``: ``'timer'`` (``Timer.blocked_autorange``), ``'adaptive'``
    (``Timer.adaptive_autorange``), ``'events'`` (CUDA events around each call, the L2
    flushed before each when ``flush_l2``; ``time.perf_counter`` on a CPU) or ``'do_bench'``
    (``triton.testing.do_bench``, CUDA with Triton only). Default: ``'events'`` on CUDA,
    ``'timer'`` on a CPU.
    """
    cuda = device.startswith("cuda")
    if method is None:
        method = "events" if cuda else "timer"
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if warmup < 0 or not min_run_time > 0:
        raise ValueError(f"warmup must be >= 0 and min_run_time > 0, got warmup={warmup}, min_run_time={min_run_time}")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    record: dict = {"method": method, "warmup": warmup, "min_run_time_s": min_run_time, "l2_flush_bytes": 0}
    if method in ("timer", "adaptive"):
        import torch.utils.benchmark as tb

        timer = tb.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
        samples, numbers = [], []
        for _ in range(MAX_ROUNDS):  # repeat the autorange until there are MIN_SAMPLES blocks
            if method == "timer":
                m = timer.blocked_autorange(min_run_time=min_run_time)
            else:
                m = timer.adaptive_autorange(threshold=0.1, min_run_time=min_run_time, max_run_time=10 * min_run_time)
            samples += [float(t) for t in m.times]
            numbers.append(int(m.number_per_run))
            if len(samples) >= MIN_SAMPLES:
                break
        record["number_per_run"] = numbers
        record["timer"] = "torch.utils.benchmark.Timer." + ("blocked_autorange" if method == "timer" else "adaptive_autorange")
        return samples, record
    if method == "do_bench":
        if not cuda:
            raise Skip("triton.testing.do_bench times CUDA kernels; this run is on a CPU")
        try:
            from triton.testing import do_bench
        except ImportError as exc:
            raise Skip(f"triton is not installed ({exc})") from None
        ms = do_bench(fn, warmup=25, rep=max(1, int(min_run_time * 1000)), return_mode="all")
        record["timer"] = "triton.testing.do_bench"
        return [float(v) / 1e3 for v in ms], record
    # 'events': one timed call per sample, repeats chosen from a probe to fill min_run_time
    probe = time.perf_counter()
    fn()
    sync()
    per_call = max(time.perf_counter() - probe, 1e-7)
    repeats = int(min(1000, max(10, min_run_time / per_call)))
    samples = []
    if cuda:
        l2 = int(getattr(torch.cuda.get_device_properties(torch.device(device)), "L2_cache_size", 0)) or 64 * 2**20
        cache = torch.empty(2 * l2 // 4, dtype=torch.int32, device=device) if flush_l2 else None
        record["l2_flush_bytes"] = 2 * l2 if flush_l2 else 0
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        for i in range(repeats):
            if cache is not None:
                cache.zero_()
            starts[i].record()
            fn()
            ends[i].record()
        torch.cuda.synchronize()
        samples = [s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends)]
        record["timer"] = "torch.cuda.Event"
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        record["timer"] = "time.perf_counter"
    return samples, record


def run_case(case: Case, device: str = "cpu", **timing) -> dict:
    """Build and time one case; returns its record (``status`` ``'ok'`` or ``'skipped'`` with the reason)."""
    base = {"name": case.name, "params": dict(case.params), "settings": dict(case.settings)}
    reason = _unavailable(case, device)
    comparison = None
    if reason is None:
        try:
            with _backend_settings(case.settings, device):
                prepared = case.build(device)
                if prepared.reference is None:
                    plain = {k: v for k, v in timing.items() if k in ("method", "warmup", "min_run_time", "flush_l2")}
                    samples, record = time_callable(prepared.fn, device=device, **plain)
                else:
                    samples, ref_samples, record = time_interleaved(
                        prepared.fn, prepared.reference, device=device, warmup=timing.get("warmup") or 2,
                        repeats=timing.get("repeats") or INTERLEAVED_REPEATS,
                        min_sample_time=timing.get("min_sample_time", 0.02))
                    ratios = [a / b for a, b in zip(samples, ref_samples)]
                    r_med, r_iqr = median_iqr(ratios)
                    comparison = {"reference": prepared.reference_label or "reference", "reference_samples_s": ref_samples,
                                  "ratios": ratios, "ratio_median": r_med, "ratio_iqr": r_iqr}
        except Skip as exc:
            reason = str(exc)
        except NotImplementedError as exc:
            reason = f"not supported by the implementation: {exc}"
    if reason is not None:
        return {**base, "status": "skipped", "reason": reason, "dtype": None, "flops": None, "bytes": None,
                "samples_s": [], "median_s": None, "iqr_s": None, "tflops": None, "gbps": None, "timing": None}
    med, iqr = median_iqr(samples)
    out = {**base, "status": "ok", "reason": None, "dtype": prepared.dtype, "flops": int(prepared.flops),
           "bytes": int(prepared.bytes), "samples_s": samples, "median_s": med, "iqr_s": iqr,
           "tflops": prepared.flops / med / 1e12, "gbps": prepared.bytes / med / 1e9, "timing": record}
    if comparison is not None:
        out["comparison"] = comparison
    if prepared.extra:
        out["extra"] = dict(prepared.extra)
    return out


def time_interleaved(fn: Callable[[], Any], reference: Callable[[], Any], *, device: str = "cpu", warmup: int = 2,
                     repeats: int = 15, min_sample_time: float = 0.02) -> tuple[list[float], list[float], dict]:
    """Time ``fn`` and ``reference`` in alternation: ``repeats`` rounds, each timing both, the order
    swapped every round (A B, B A, …) so that a slow drift of the machine (clock, other load)
    falls on both alike; a sample is the mean of ``number`` consecutive calls, ``number`` chosen
    from a probe so a sample lasts at least ``min_sample_time`` seconds. Returns
    ``(fn seconds per call, reference seconds per call, record)``, one sample per round each;
    their ratios, round by round, are what a comparison reports (median and IQR)."""
    if repeats < 1 or warmup < 0 or not min_sample_time > 0:
        raise ValueError(f"need repeats >= 1, warmup >= 0, min_sample_time > 0; got {repeats}, {warmup}, {min_sample_time}")
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(warmup):
        fn()
        reference()
    sync()

    def per_call(f, number):
        t0 = time.perf_counter()
        for _ in range(number):
            f()
        sync()
        return (time.perf_counter() - t0) / number

    probe = max(per_call(fn, 1), per_call(reference, 1), 1e-7)
    number = max(1, math.ceil(min_sample_time / probe))
    a, b = [], []
    for r in range(repeats):
        if r % 2 == 0:
            a.append(per_call(fn, number))
            b.append(per_call(reference, number))
        else:
            b.append(per_call(reference, number))
            a.append(per_call(fn, number))
    record = {"method": "interleaved", "warmup": warmup, "repeats": repeats, "number_per_sample": number,
              "min_sample_time_s": min_sample_time, "timer": "time.perf_counter" + (" + cuda.synchronize" if cuda else ""),
              "order": "alternating (A B, B A, …)"}
    return a, b, record


def measure_cpu_roofline(*, n: int = 2048, copy_bytes: int = 256 * 2**20, repeats: int = 5) -> dict:
    """The CPU's roofline, measured with the threads torch uses now.

    Peak: ``2n³ / t`` for a float32 ``n×n`` GEMM (``torch.mm``), median of ``repeats``.
    Bandwidth: ``2·Q / t`` for copying a ``Q``-byte float32 buffer into another, already
    allocated one (``Q`` read + ``Q`` written), median of ``repeats`` — large enough to miss
    every cache. Returns the two rates, their samples and what was run."""
    n, copy_bytes, repeats = as_int(n, "n", 1), as_int(copy_bytes, "copy_bytes", 4), as_int(repeats, "repeats", 1)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)
    gemm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        gemm.append(time.perf_counter() - t0)
    src = torch.ones(copy_bytes // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    copies = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        copies.append(time.perf_counter() - t0)
    t_gemm, t_copy = median_iqr(gemm)[0], median_iqr(copies)[0]
    return {"peak_flops": 2 * n ** 3 / t_gemm, "bandwidth": 2 * (copy_bytes // 4) * 4 / t_copy,
            "threads": torch.get_num_threads(),
            "gemm": {"op": f"torch.mm float32 {n}x{n} @ {n}x{n}", "flops": 2 * n ** 3, "samples_s": gemm},
            "copy": {"op": f"Tensor.copy_ of {copy_bytes // 4 * 4:,} B float32 into an allocated buffer",
                     "bytes": 2 * (copy_bytes // 4) * 4, "samples_s": copies}}


def keep_freed_memory() -> bool:
    """Tell glibc's ``malloc`` to keep freed memory for reuse (``mallopt``: no ``mmap`` for large
    blocks, no trimming), as a caching allocator does; returns whether it applied.

    Without it, every large tensor a call allocates is fresh ``mmap`` memory whose first touch
    page-faults, on every call — a cost of the allocator, not of the algorithm, which falls
    hardest on algorithms with large temporaries (im2col's unfolded matrix, FFT spectra)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if platform.system() != "Linux" or not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
        return all(libc.mallopt(opt, val) == 1 for opt, val in ((m_mmap_max, 0), (m_trim_threshold, 2**31 - 1),
                                                                (m_top_pad, 64 * 2**20)))
    except (OSError, AttributeError):
        return False


def run_suite(name: str, device: str = "cpu", size: str | None = None, progress=None, command: str | None = None,
              roofline: dict | bool | None = None, allocator: str | None = None, **timing) -> dict:
    """Run every case of suite ``name`` and return the result document (see :data:`RESULT_SCHEMA`).

    On a CPU the document records the machine's measured roofline (:func:`measure_cpu_roofline`,
    measured here unless a measured ``roofline`` dict is passed; ``roofline=False`` leaves it out)
    and ``allocator``, a description of the memory allocator setting the run used."""
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but torch.cuda.is_available() is False")
    size = size or ("full" if device.startswith("cuda") else "small")
    cases = suite(name, size)
    if roofline is None or roofline is True:
        roofline = measure_cpu_roofline() if device == "cpu" else None
    records = []
    for i, case in enumerate(cases):
        if progress is not None:
            progress(i, len(cases), case.name)
        records.append(run_case(case, device, **timing))
    if progress is not None:
        progress(len(cases), len(cases), "done")
    data = {
        "schema": SCHEMA_ID,
        "suite": name,
        "size": size,
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "command": command or f"python -m convbook bench --device {device} --suite {name} --size {size}",
        "device": device_info(device),
        "settings": {
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "cudnn_allow_tf32_default": bool(torch.backends.cudnn.allow_tf32),
            "matmul_allow_tf32_default": bool(torch.backends.cuda.matmul.allow_tf32),
            "num_threads": torch.get_num_threads(),
            "flop_convention": "2 FLOPs per multiply-accumulate of conv and linear layers",
            "byte_convention": "compulsory traffic: each layer reads input and parameters once, writes output once",
            "allocator": allocator or "default",
        },
        "cases": records,
    }
    if roofline:
        data["roofline"] = roofline
    return data


def device_info(device: str = "cpu") -> dict:
    """Name, driver, CUDA/cuDNN/torch versions and clocks (where readable) of the device."""
    info = {"kind": "cuda" if device.startswith("cuda") else "cpu", "name": _cpu_name(), "driver": None, "cuda": None,
            "cudnn": None, "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "clocks": {}}
    if info["kind"] == "cpu":
        mhz = _cpu_mhz()
        if mhz:
            info["clocks"] = {"cpu_mhz": mhz}
        info["cpu_count"] = os.cpu_count()
        return info
    dev = torch.device(device)
    props = torch.cuda.get_device_properties(dev)
    info.update(name=torch.cuda.get_device_name(dev), cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                memory_bytes=int(props.total_memory), sm_count=int(props.multi_processor_count),
                capability=f"{props.major}.{props.minor}")
    smi = _nvidia_smi(dev.index or 0)
    if smi:
        info["driver"] = smi.pop("driver_version", None)
        info["clocks"] = smi
    return info


# --------------------------------------------------------------------------------------
# Result files
# --------------------------------------------------------------------------------------

_NUM = {"type": "number"}
_NULLNUM = {"type": ["number", "null"]}

#: JSON Schema (draft 2020-12) of one result file.
RESULT_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["schema", "suite", "size", "date", "command", "device", "settings", "cases"],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "suite": {"type": "string", "minLength": 1},
        "size": {"enum": list(SIZES)},
        "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}"},
        "command": {"type": "string"},
        "device": {
            "type": "object",
            "required": ["kind", "name", "driver", "cuda", "cudnn", "torch", "python", "clocks"],
            "properties": {
                "kind": {"enum": ["cpu", "cuda"]},
                "name": {"type": "string", "minLength": 1},
                "driver": {"type": ["string", "null"]},
                "cuda": {"type": ["string", "null"]},
                "cudnn": {"type": ["integer", "null"]},
                "torch": {"type": "string"},
                "python": {"type": "string"},
                "clocks": {"type": "object"},
            },
        },
        "settings": {
            "type": "object",
            "required": ["cudnn_benchmark", "num_threads"],
            "properties": {"cudnn_benchmark": {"type": "boolean"}, "num_threads": {"type": "integer", "minimum": 1}},
        },
        "roofline": {
            "type": "object",
            "required": ["peak_flops", "bandwidth", "threads", "gemm", "copy"],
            "properties": {"peak_flops": {"type": "number", "exclusiveMinimum": 0},
                           "bandwidth": {"type": "number", "exclusiveMinimum": 0},
                           "threads": {"type": "integer", "minimum": 1}},
        },
        "cases": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "status", "reason", "params", "settings", "dtype", "flops", "bytes", "samples_s",
                             "median_s", "iqr_s", "tflops", "gbps", "timing"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "status": {"enum": ["ok", "skipped"]},
                    "reason": {"type": ["string", "null"]},
                    "params": {"type": "object"},
                    "settings": {"type": "object"},
                    "dtype": {"type": ["string", "null"]},
                    "flops": {"type": ["integer", "null"], "minimum": 1},
                    "bytes": {"type": ["integer", "null"], "minimum": 1},
                    "samples_s": {"type": "array"},  # every sample a finite number > 0: checked in Python (fast)
                    "median_s": _NULLNUM,
                    "iqr_s": _NULLNUM,
                    "tflops": _NULLNUM,
                    "gbps": _NULLNUM,
                    "timing": {"type": ["object", "null"]},
                    "comparison": {
                        "type": "object",
                        "required": ["reference", "reference_samples_s", "ratios", "ratio_median", "ratio_iqr"],
                        "properties": {"reference": {"type": "string"}, "reference_samples_s": {"type": "array", "minItems": 1},
                                       "ratios": {"type": "array", "minItems": 1}, "ratio_median": _NUM, "ratio_iqr": _NUM},
                    },
                    "extra": {"type": "object"},
                },
                "if": {"properties": {"status": {"const": "ok"}}},
                "then": {"properties": {"reason": {"type": "null"}, "samples_s": {"minItems": 1}, "median_s": _NUM,
                                        "iqr_s": _NUM, "flops": {"type": "integer"}, "bytes": {"type": "integer"},
                                        "dtype": {"type": "string"}, "timing": {"type": "object", "required": ["method", "warmup"]}}},
                "else": {"properties": {"reason": {"type": "string", "minLength": 1}, "samples_s": {"maxItems": 0}}},
            },
        },
    },
}


def validate_result(data: Any, source: str = "<result>") -> dict:
    """Check ``data`` against :data:`RESULT_SCHEMA` and its arithmetic; ``ValueError`` naming ``source`` if not.

    Beyond the schema: every sample is a finite number of seconds > 0; every ``'ok'`` case's median and IQR must be those of its samples
    (:func:`median_iqr`, relative 1e-9) and its rates ``F / median``, ``Q / median``.
    """
    import jsonschema

    exc = jsonschema.exceptions.best_match(_validator().iter_errors(data))
    if exc is not None:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ValueError(f"{source}: not a valid bench result file: at {where}: {exc.message}")
    roof = data.get("roofline")
    if roof is not None:
        for key, what, count in (("peak_flops", "gemm", "flops"), ("bandwidth", "copy", "bytes")):
            part = roof[what]
            samples = part.get("samples_s") if isinstance(part, dict) else None
            if not samples or not isinstance(part.get(count), (int, float)) or any(
                    not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0 for v in samples):
                raise ValueError(f"{source}: roofline {what}: needs '{count}' and samples > 0")
            if not math.isclose(roof[key], part[count] / median_iqr(samples)[0], rel_tol=1e-9):
                raise ValueError(f"{source}: roofline {key} = {roof[key]!r} does not follow from its samples")
    for i, case in enumerate(data["cases"]):
        bad = [v for v in case["samples_s"] if isinstance(v, bool) or not isinstance(v, (int, float))
               or not math.isfinite(v) or v <= 0]
        if bad:
            raise ValueError(f"{source}: case {i} ({case['name']!r}): samples must be finite numbers > 0 seconds, "
                             f"got {bad[:3]!r}")
        if case["status"] != "ok":
            continue
        comp = case.get("comparison")
        if comp is not None:
            ref = comp["reference_samples_s"]
            if len(ref) != len(case["samples_s"]) or len(comp["ratios"]) != len(ref) or any(
                    not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0 for v in ref):
                raise ValueError(f"{source}: case {i} ({case['name']!r}): a comparison needs one finite reference sample "
                                 f"> 0 and one ratio per sample")
            for a, b, r in zip(case["samples_s"], ref, comp["ratios"]):
                if not math.isclose(r, a / b, rel_tol=1e-9):
                    raise ValueError(f"{source}: case {i} ({case['name']!r}): ratio {r!r} is not sample / reference "
                                     f"({a!r} / {b!r})")
            r_med, r_iqr = median_iqr(comp["ratios"])
            if not (math.isclose(comp["ratio_median"], r_med, rel_tol=1e-9) and
                    math.isclose(comp["ratio_iqr"], r_iqr, rel_tol=1e-9, abs_tol=1e-15)):
                raise ValueError(f"{source}: case {i} ({case['name']!r}): ratio median/IQR do not match its ratios")
        med, iqr = median_iqr(case["samples_s"])
        expected = {"median_s": med, "iqr_s": iqr, "tflops": case["flops"] / med / 1e12, "gbps": case["bytes"] / med / 1e9}
        for key, value in expected.items():
            got = case[key]
            if got is None or not math.isclose(got, value, rel_tol=1e-9, abs_tol=0.0):
                raise ValueError(f"{source}: case {i} ({case['name']!r}): {key} = {got!r} does not match its samples "
                                 f"(expected {value!r})")
    return data


def result_filename(data: dict) -> str:
    """``<device>-<suite>-<size>.json`` with the device name reduced to ``[a-z0-9-]``."""
    slug = "".join(c if c.isalnum() else "-" for c in data["device"]["name"].lower())
    slug = "-".join(part for part in slug.split("-") if part) or "device"
    return f"{data['device']['kind']}-{slug}-{data['suite']}-{data['size']}.json"


def write_result(data: dict, directory: str | os.PathLike = DEFAULT_DIR, *, force: bool = False,
                 filename: str | None = None) -> pathlib.Path:
    """Validate ``data`` and write it atomically as ``directory/filename``.

    The JSON goes to a temporary file in the same folder, is flushed to disk, then linked
    into place (fails if the name exists: no overwrite) or, with ``force``, renamed over it
    (``os.replace``). A reader never sees a half-written file. Existing file without
    ``force`` → ``ValueError`` naming the file.
    """
    validate_result(data, "result to write")
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / (filename or result_filename(data))
    if target.exists() and not force:
        raise ValueError(f"{target} already exists: refusing to overwrite a recorded result (pass force=True / --force)")
    fd, tmp = tempfile.mkstemp(prefix="." + target.name + ".", suffix=".tmp", dir=directory)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a result file is as readable as any other
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, ensure_ascii=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        if force:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise ValueError(f"{target} already exists: refusing to overwrite a recorded result (pass force=True / --force)") from None
            os.unlink(tmp)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def load_result(path: str | os.PathLike) -> dict:
    """Read and validate one result file; any problem → ``ValueError`` naming the file."""
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read bench result file: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    return validate_result(data, str(path))


def load_results(directory: str | os.PathLike = DEFAULT_DIR) -> list[tuple[pathlib.Path, dict]]:
    """Every ``*.json`` result in ``directory`` (sorted by name), validated."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return []
    return [(p, load_result(p)) for p in sorted(directory.glob("*.json"))]


def results_by_device(results: Sequence[tuple[pathlib.Path, dict]]) -> dict[str, list[tuple[pathlib.Path, dict]]]:
    """Group results by ``"<kind>: <device name>"``, CPU first."""
    groups: dict[str, list] = {}
    for path, data in sorted(results, key=lambda r: (r[1]["device"]["kind"] != "cpu", r[0].name)):
        groups.setdefault(f"{data['device']['kind']}: {data['device']['name']}", []).append((path, data))
    return groups


def case_label(case: dict) -> str:
    """The case's name with the shape that was actually timed.

    ResNet-50 layer cases are named after the full-size layer (``conv1 7x7/2 3->64 @224``); at ``--size small``
    they time fewer channels on a smaller image. The label then shows the timed shape and names the layer it was
    scaled from, so every FLOP/byte and bound printed beside it belongs to the shape on its row.
    """
    p, name = case["params"], case["name"]
    full = p.get("resnet50_layer")
    if full and all(k in p for k in ("kernel", "stride", "c_in", "c_out", "hw")):
        timed = f"{p['kernel']}x{p['kernel']}/{p['stride']} {p['c_in']}->{p['c_out']} @{p['hw']}"
        if p.get("groups", 1) != 1:
            timed += f" g{p['groups']}"
        if timed != full:
            return name.replace(full, timed) + f" [scaled from {full}]"
    return name


def format_provenance(data: dict, path: str | os.PathLike | None = None) -> str:
    """Where a result came from: file, date, command, device, versions, clocks, timing method."""
    d, s = data["device"], data["settings"]
    ok = [c for c in data["cases"] if c["status"] == "ok"]
    timing = ok[0]["timing"] if ok else {}
    lines = [
        f"file      {pathlib.Path(path).name if path else '(in memory)'}",
        f"suite     {data['suite']} (size {data['size']}), recorded {data['date']}",
        f"command   {data['command']}",
        f"device    {d['kind']}: {d['name']}" + (f", driver {d['driver']}" if d.get("driver") else ""),
        f"versions  torch {d['torch']}, CUDA {d['cuda'] or '—'}, cuDNN {d['cudnn'] or '—'}, python {d['python']}",
        f"clocks    {', '.join(f'{k} {v}' for k, v in sorted(d['clocks'].items())) or 'not readable'}",
        f"settings  cudnn.benchmark={s['cudnn_benchmark']}, threads {s['num_threads']}"
        + (f", allocator: {s['allocator']}" if s.get("allocator") not in (None, "default") else ""),
    ]
    roof = data.get("roofline")
    if roof:
        lines.append(f"roofline  measured: peak {roof['peak_flops'] / 1e9:.1f} GFLOP/s ({roof['gemm']['op']}), "
                     f"bandwidth {roof['bandwidth'] / 1e9:.1f} GB/s (copy), {roof['threads']} thread(s)")
    if timing:
        lines.append(f"timing    {timing.get('timer', timing['method'])}, warm-up {timing['warmup']}, "
                     f"L2 flush {timing.get('l2_flush_bytes', 0):,} B")
    return "\n".join(lines)


def format_cases(data: dict) -> str:
    """A fixed-width table of a result's cases: median, IQR (ms), GFLOP/s, GB/s, samples; skipped with reasons."""
    rows = [("case", "median ms", "IQR ms", "GFLOP/s", "GB/s", "n")]
    skipped = []
    for c in data["cases"]:
        if c["status"] == "ok":
            rows.append((case_label(c), f"{c['median_s'] * 1e3:.3f}", f"{c['iqr_s'] * 1e3:.3f}", f"{c['tflops'] * 1e3:.2f}",
                         f"{c['gbps']:.2f}", str(len(c["samples_s"]))))
        else:
            skipped.append(f"  skipped {c['name']}: {c['reason']}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join([r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, len(r))]) for r in rows]
    return "\n".join(out + skipped)


def format_comparisons(data: dict) -> str:
    """Cases timed against a reference: both medians (ms), the median ratio ``time / reference time``
    with its IQR over the interleaved rounds, the float32 error, and each case's extra notes."""
    rows = [("case", "ref ms", "ms", "× ref", "IQR", "float32 err", "note")]
    skipped = []
    for c in data["cases"]:
        if c["status"] != "ok" or "comparison" not in c:
            if c["status"] != "ok":
                skipped.append(f"  skipped {c['name']}: {c['reason']}")
            continue
        comp, extra = c["comparison"], dict(c.get("extra", {}))
        err = extra.pop("float32_rel_error", None)
        note = []
        if "cost_model_tile" in extra:
            note.append("cost model's tile" if extra["cost_model_tile"] == extra.get("m") else f"cost model: m={extra['cost_model_tile']}")
        if "cost_model_crossover" in extra:
            note.append(f"model crossover k={extra['cost_model_crossover']}")
        rows.append((case_label(c), f"{median_iqr(comp['reference_samples_s'])[0] * 1e3:.2f}", f"{c['median_s'] * 1e3:.2f}",
                     f"{comp['ratio_median']:.2f}", f"{comp['ratio_iqr']:.2f}", "—" if err is None else f"{err:.1e}",
                     ", ".join(note)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join([r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, len(r) - 1)] + [r[-1]]).rstrip()
           for r in rows]
    return "\n".join(out + skipped)


def comparison_summary(data: dict) -> dict[str, dict]:
    """Per algorithm (``params['algorithm']``): the number of cases, the median over cases of each
    case's median ratio to the reference, and the smallest and largest case ratio. Winograd cases
    also count ``"chosen"``: the cases whose tile is the one the cost model picks."""
    groups: dict[str, list[float]] = {}
    for c in data["cases"]:
        if c["status"] == "ok" and "comparison" in c:
            groups.setdefault(c["params"].get("algorithm", c["name"]), []).append(c["comparison"]["ratio_median"])
            extra = c.get("extra", {})
            if "cost_model_tile" in extra and extra["cost_model_tile"] == extra.get("m"):
                groups.setdefault("Winograd (cost model's tile)", []).append(c["comparison"]["ratio_median"])
    return {name: {"cases": len(r), "median": median_iqr(r)[0], "min": min(r), "max": max(r)} for name, r in groups.items()}


def fft_crossover(data: dict) -> dict:
    """The FFT cases of a fast-algorithms result: ``{"kernels", "ratios", "measured", "model"}`` —
    the kernel sizes timed, their median ratios to ``F.conv2d``, the smallest timed ``k`` from
    which the FFT is faster at every larger timed ``k`` (``None`` if it never is) and the
    crossover the multiplication count predicts (``convbook.impl.fft_crossover_kernel``)."""
    cases = sorted((c for c in data["cases"] if c["status"] == "ok" and c["params"].get("algorithm") == "FFT"),
                   key=lambda c: c["params"]["kernel"])
    if not cases:
        raise ValueError(f"result for suite {data.get('suite')!r} has no FFT cases")
    ks = [c["params"]["kernel"] for c in cases]
    ratios = [c["comparison"]["ratio_median"] for c in cases]
    measured = None
    for i in range(len(ks) - 1, -1, -1):
        if ratios[i] >= 1:
            break
        measured = ks[i]
    model = cases[0].get("extra", {}).get("cost_model_crossover")
    return {"kernels": ks, "ratios": ratios, "measured": measured, "model": model}


def winograd_tile_misses(data: dict) -> list[dict]:
    """Layers of a fast-algorithms result where the Winograd tile the cost model picks
    (``extra['cost_model_tile']``) is not the one measured fastest (smallest median ratio to the
    reference): ``[{"layer", "model_m", "fastest_m", "ratios": {m: ratio}}]``, the layer named by the
    shape timed."""
    by_layer: dict[str, list[dict]] = {}
    for c in data["cases"]:
        if c["status"] == "ok" and str(c["params"].get("algorithm", "")).startswith("Winograd"):
            p = c["params"]
            by_layer.setdefault(f"{p['kernel']}x{p['kernel']} {p['c_in']}->{p['c_out']} @{p['hw']}", []).append(c)
    misses = []
    for layer, cases in by_layer.items():
        ratios = {c["params"]["m"]: c["comparison"]["ratio_median"] for c in cases}
        fastest = min(ratios, key=ratios.get)
        model = cases[0].get("extra", {}).get("cost_model_tile")
        if model is not None and fastest != model:
            misses.append({"layer": layer, "model_m": model, "fastest_m": fastest, "ratios": ratios})
    return misses


def plot_comparisons(data: dict, axes=None):
    """Three panels from a fast-algorithms result: the median time ratio to ``F.conv2d`` of every
    case (points) with the interquartile range of its interleaved rounds (bars), on a log scale
    with 1 (as fast as ``F.conv2d``) marked — im2col per ResNet-50 layer, Winograd per layer and
    tile (filled: the cost model's tile), and the FFT against the kernel size with the crossover
    the multiplication count predicts."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(13, 6), gridspec_kw={"width_ratios": [1.4, 1, 1]})
    ok = [c for c in data["cases"] if c["status"] == "ok" and "comparison" in c]

    def spread(c):
        xs = sorted(c["comparison"]["ratios"])
        return c["comparison"]["ratio_median"], _quantile(xs, 0.25), _quantile(xs, 0.75)

    def horizontal(ax, cases, labels, filled):
        for i, (c, lab, full) in enumerate(zip(cases, labels, filled)):
            med, q1, q3 = spread(c)
            ax.plot([q1, q3], [i, i], color="0.4", lw=2)
            ax.plot([med], [i], "o", color="C0", mfc="C0" if full else "white", ms=6)
        ax.set_yticks(range(len(cases)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.axvline(1, color="k", lw=1, ls="--")
        ax.set_xlabel("time ÷ F.conv2d time (median, IQR)")
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "25" else ""))

    im2col = [c for c in ok if c["params"].get("algorithm") == "im2col"]
    def shape(c):  # the shape timed (at the small size, a scaled-down layer)
        p = c["params"]
        return f"{p['kernel']}x{p['kernel']}/{p['stride']} {p['c_in']}->{p['c_out']} @{p['hw']}"

    horizontal(axes[0], im2col, [shape(c) for c in im2col], [True] * len(im2col))
    axes[0].set_title(f"im2col + GEMM, {len(im2col)} ResNet-50 layers", fontsize=9)
    wino = [c for c in ok if str(c["params"].get("algorithm", "")).startswith("Winograd")]
    horizontal(axes[1], wino, [f"F({c['params']['m']},3) {shape(c)}" for c in wino],
               [c.get("extra", {}).get("cost_model_tile") == c["params"].get("m") for c in wino])
    axes[1].set_title("Winograd (filled: the cost model's tile)", fontsize=9)
    fft = sorted((c for c in ok if c["params"].get("algorithm") == "FFT"), key=lambda c: c["params"]["kernel"])
    if fft:
        ks = [c["params"]["kernel"] for c in fft]
        meds, q1s, q3s = zip(*(spread(c) for c in fft))
        ax = axes[2]
        ax.errorbar(ks, meds, yerr=[[m - a for m, a in zip(meds, q1s)], [b - m for m, b in zip(meds, q3s)]], fmt="o-",
                    color="C1", capsize=3)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "25" else ""))
        ax.axhline(1, color="k", lw=1, ls="--")
        cross = fft_crossover(data)
        if cross["model"] is not None:
            ax.axvline(cross["model"], color="C2", ls=":", lw=1.5, label=f"model: FFT wins from k = {cross['model']}")
        if cross["measured"] is not None:
            ax.axvline(cross["measured"], color="C3", ls="-.", lw=1.5, label=f"measured: from k = {cross['measured']}")
        ax.set_xticks(ks)
        ax.set_xlabel("kernel size k")
        ax.set_ylabel("time ÷ F.conv2d time")
        p = fft[0]["params"]
        ax.set_title(f"FFT, {p['c_in']} channels, {p['hw']}×{p['hw']}, batch {p['batch']}", fontsize=9)
        ax.legend(fontsize=7)
    return axes


#: Per suite, the parameters that vary *within* a comparison (cases equal in every other
#: parameter are compared with the first of them).
VARYING = {
    "resnet50-layers": None,
    "algorithms": ("algorithm",),
    "grouped-constant-macs": ("cardinality", "width"),
    "depthwise": ("form",),
    "resnext-forms": ("form",),
    "bn-fold": ("folded",),
    "channels-last": ("memory_format",),
    "precision": (),
    "whole-network": ("batch", "input"),
    "fast-algorithms": None,
}


def relative_rows(data: dict) -> list[dict]:
    """Each case's median time and FLOPs relative to the first case of its comparison group.

    Groups are cases equal in every parameter except the suite's :data:`VARYING` ones; for
    the whole-network suite times are per image (median / batch). Skipped cases keep their
    reason. ``spread`` is the two cases' relative IQRs added, ``IQR/median`` of the case plus
    that of the group's first case; ``beyond_spread`` says whether ``|rel_time − 1|`` exceeds
    it (a difference the repeats' own scatter does not explain). Returns
    ``[{"group", "case", "status", "ms", "rel_time", "rel_flops", "spread", "beyond_spread", "reason"}]``.
    """
    drop = VARYING.get(data["suite"])
    if drop is None:
        raise ValueError(f"suite {data['suite']!r} has no comparison groups; known: "
                         f"{', '.join(k for k, v in VARYING.items() if v is not None)}")
    per_image = data["suite"] == "whole-network"
    rows, base = [], {}
    for c in data["cases"]:
        key = json.dumps({k: v for k, v in sorted(c["params"].items()) if k not in drop}, sort_keys=True)
        row = {"group": key, "case": case_label(c), "status": c["status"], "ms": None, "rel_time": None, "rel_flops": None,
               "spread": None, "beyond_spread": None, "reason": c["reason"]}
        if c["status"] == "ok":
            t = c["median_s"] / (c["params"].get("batch", 1) if per_image else 1)
            f = c["flops"] / (c["params"].get("batch", 1) if per_image else 1)
            scatter = c["iqr_s"] / c["median_s"]
            base.setdefault(key, (t, f, scatter))
            rel = t / base[key][0]
            spread = scatter + base[key][2]
            row.update(ms=t * 1e3, rel_time=rel, rel_flops=f / base[key][1], spread=spread,
                       beyond_spread=abs(rel - 1) > spread)
        rows.append(row)
    return rows


def format_relative(data: dict) -> str:
    """:func:`relative_rows` as a fixed-width table (``×`` the group's first case)."""
    rows = relative_rows(data)
    unit = "ms/image" if data["suite"] == "whole-network" else "median ms"
    head = ("case", unit, "time ×", "FLOPs ×", "spread ±", "beyond spread")
    table = [head]
    notes = []
    seen: set[str] = set()
    for r in rows:
        if r["status"] == "ok":
            first = r["group"] not in seen  # the group's reference case: nothing to compare
            seen.add(r["group"])
            table.append((r["case"], f"{r['ms']:.3f}", f"{r['rel_time']:.2f}", f"{r['rel_flops']:.2f}",
                          "" if first else f"{r['spread']:.2f}", "" if first else ("yes" if r["beyond_spread"] else "no")))
        else:
            notes.append(f"  skipped {r['case']}: {r['reason']}")
    widths = [max(len(t[i]) for t in table) for i in range(len(head))]
    lines = ["  ".join([t[0].ljust(widths[0])] + [t[i].rjust(widths[i]) for i in range(1, len(head))]) for t in table]
    return "\n".join(lines + notes)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def add_cli(subparsers) -> None:
    """Register ``bench`` on ``python -m convbook``'s subparsers."""
    p = subparsers.add_parser("bench", help="time a suite of convolution cases and write a JSON result file")
    p.add_argument("--suite", choices=list(SUITES), action="append",
                   help="a suite to run (repeatable; default: every suite, one result file each)")
    p.add_argument("--device", default="cpu", help="cpu (default, small sizes) or cuda[:N] (the papers' sizes)")
    p.add_argument("--size", choices=SIZES, help="case sizes (default: small on cpu, full on cuda)")
    p.add_argument("--out", default=str(DEFAULT_DIR), help="folder for the result file (default notebooks/data/bench)")
    p.add_argument("--force", action="store_true", help="overwrite an existing result file")
    p.add_argument("--method", choices=METHODS, help="timer (default on cpu), adaptive, events (default on cuda), do_bench")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before timing (default 3)")
    p.add_argument("--min-run-time", type=float, default=0.2, help="seconds of timed calls per case (default 0.2)")
    p.add_argument("--cudnn-benchmark", choices=["on", "off"], default="on", help="torch.backends.cudnn.benchmark (recorded)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads for a CPU run (recorded; default: torch's choice)")
    p.add_argument("--malloc", choices=["keep", "system"], default="keep",
                   help="on a CPU: keep freed memory for reuse (glibc mallopt, like a caching allocator; default) or "
                        "the system default (every large temporary page-faults anew); recorded")
    p.add_argument("--repeats", type=int, default=INTERLEAVED_REPEATS,
                   help=f"rounds of interleaved timing for comparison cases (default {INTERLEAVED_REPEATS})")
    p.add_argument("--list", action="store_true", help="list the suites and their cases, then exit")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args) -> int:
    if args.list:
        for name in SUITES:
            print(name)
            for case in suite(name, args.size or "small"):
                print(f"    {case.name}")
        return 0
    if not (args.device == "cpu" or args.device.startswith("cuda")):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {args.device!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {args.device!r} requested but torch.cuda.is_available() is False")
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    names = args.suite or list(SUITES)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark == "on"
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    allocator = "default"
    if args.device == "cpu" and args.malloc == "keep":
        allocator = ("glibc malloc keeps freed memory (mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=2^31-1)"
                     if keep_freed_memory() else "default (mallopt unavailable)")
    roof = None
    if args.device == "cpu":
        print(f"measuring the CPU roofline ({torch.get_num_threads()} thread(s)) …", file=sys.stderr, flush=True)
        roof = measure_cpu_roofline()
        print(f"  peak {roof['peak_flops'] / 1e9:.1f} GFLOP/s (SGEMM), bandwidth {roof['bandwidth'] / 1e9:.1f} GB/s (copy)",
              file=sys.stderr, flush=True)
    for i, name in enumerate(names):
        if len(names) > 1:
            print(f"suite {i + 1}/{len(names)}: {name}", file=sys.stderr, flush=True)
        command = f"python -m convbook bench --device {args.device} --suite {name}"
        for flag, value in (("--size", args.size), ("--method", args.method), ("--threads", args.threads)):
            if value is not None:
                command += f" {flag} {value}"
        command += (f" --warmup {args.warmup} --min-run-time {args.min_run_time} --repeats {args.repeats}"
                    f" --cudnn-benchmark {args.cudnn_benchmark}" + (f" --malloc {args.malloc}" if args.device == "cpu" else ""))
        data = run_suite(name, args.device, args.size, progress=_progress_bar(sys.stderr), command=command,
                         roofline=roof if roof is not None else False, allocator=allocator,
                         method=args.method, warmup=args.warmup, min_run_time=args.min_run_time, repeats=args.repeats)
        path = write_result(data, args.out, force=args.force)
        print(format_provenance(data, path))
        print(format_comparisons(data) if name == "fast-algorithms" else format_cases(data))
        print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------


@claim(
    "bench.median-iqr",
    title="Median and interquartile range of timing samples",
    chapter=12,
    statement="The harness's median and interquartile range equal numpy.percentile's (linear interpolation) 50th percentile and 75th minus 25th percentile, for samples of every length, with ties and outliers.",
    reference="numpy.percentile (linear interpolation)",
)
def check_median_iqr(device: str = "cpu"):
    t = Tally(tol=1e-12)
    gen = np.random.default_rng(1201)
    for n in list(range(1, 40)) + [97, 250, 1000]:
        for kind in ("lognormal", "ties", "outlier"):
            if kind == "lognormal":
                xs = gen.lognormal(-7.0, 0.3, n)
            elif kind == "ties":
                xs = gen.integers(1, 4, n).astype(float) * 1e-3
            else:
                xs = np.concatenate([gen.normal(1e-3, 1e-5, n), [0.5]])
            med, iqr = median_iqr(list(gen.permutation(xs)))
            q1, q2, q3 = np.percentile(xs, [25, 50, 75])
            t.close(np.array([med, iqr]), np.array([q2, q3 - q1]), f"n={n} {kind}")
    return t.verdict("random sample sets vs numpy.percentile (linear)", case_unit="sample sets", dtype="float64")


@claim(
    "bench.flop-count",
    title="The harness counts the FLOPs PyTorch's FlopCounterMode counts",
    chapter=12,
    statement="For every case of the single-layer suites and the BN-folding suite at both sizes, the ResNeXt block forms at the small size, and the whole ResNet-50 and ResNeXt-50 at 224x224 (batch 1), the FLOP count the harness divides by the median time equals torch.utils.flop_counter.FlopCounterMode's count of the same computation (2 FLOPs per multiply-accumulate).",
    reference="torch.utils.flop_counter.FlopCounterMode",
)
def check_flop_count(device: str = "cpu"):
    from torch.utils.flop_counter import FlopCounterMode

    t = Tally()
    # Every suite but "algorithms", whose F is by convention the direct algorithm's count for every
    # implementation (FFT and Winograd do fewer multiplications: an effective rate, stated in chapter 12).
    # Building a 32-branch block or a whole network costs ~0.15 s even on the meta device, so within the
    # 1.5 s budget those suites are checked at one size (the block forms) or one case per network.
    plan = [(n, z, None) for n in ("resnet50-layers", "grouped-constant-macs", "depthwise", "bn-fold", "channels-last",
                                   "precision") for z in SIZES]
    plan += [("resnext-forms", "small", None), ("whole-network", "full", 1)]
    for name, size, batch in plan:
        for case in suite(name, size):
            if batch is not None and case.params.get("batch") != batch:
                continue
            if case.cuda_only:
                continue
            missing = _unavailable(case, "meta")
            if missing is not None:  # a library module the case needs is gone: a failure, not a skip
                t.exact(False, f"{name}/{size}/{case.name}: {missing}")
                continue
            prepared = case.build("meta")
            counter = FlopCounterMode(display=False)
            with counter:
                prepared.fn()
            t.exact(prepared.flops == counter.get_total_flops(),
                    f"{name}/{size}/{case.name}: harness {prepared.flops:,} vs FlopCounterMode {counter.get_total_flops():,}")
    return t.verdict("single-layer, block and whole-network cases on the meta device vs FlopCounterMode",
                     case_unit="cases")


@claim(
    "bench.schema",
    title="The recorded result files are valid",
    chapter=12,
    statement="Every result file under notebooks/data/bench validates against the harness's JSON schema with medians, IQRs and rates that follow from its raw samples, and the validator rejects files with a missing field, a wrong type, a negative sample, a skipped case without a reason or a median that does not match its samples.",
    reference="numpy recomputation of each median, IQR and rate from the raw samples; deliberately broken copies",
)
def check_schema(device: str = "cpu"):
    t = Tally()
    files = sorted(DEFAULT_DIR.glob("*.json"))
    for path in files:
        try:
            data = load_result(path)
            t.exact(True)
        except ValueError as exc:
            t.exact(False, str(exc))
            continue
        for what, broken in _broken_variants(data):
            try:
                validate_result(broken, f"{path.name} ({what})")
                t.exact(False, f"{path.name}: validator accepted a file with {what}")
            except ValueError as exc:
                t.exact(path.name in str(exc), f"error does not name the file: {exc}")
    t.note(f"{len(files)} recorded result files")
    return t.verdict("recorded files validated; broken copies rejected", case_unit="checks")


# --------------------------------------------------------------------------------------
# Suite definitions (private builders)
# --------------------------------------------------------------------------------------


def _conv_case(name, c_in, c_out, k, hw, stride=1, groups=1, batch=1, dtype=torch.float32, channels_last=False,
               params_extra=None, settings=None) -> Case:
    pad = k // 2

    def build(device):
        x, conv = _conv_inputs(device, batch, c_in, c_out, k, hw, stride, pad, groups, dtype, channels_last)
        f, q = conv_counts(x.shape, conv.weight.shape, stride, pad, 1, groups, x.element_size())
        return Prepared(_no_grad(conv, x), f, q, str(dtype).replace("torch.", ""))

    params = {"batch": batch, "c_in": c_in, "c_out": c_out, "kernel": k, "hw": hw, "stride": stride, "padding": pad,
              "groups": groups, "memory_format": "channels_last" if channels_last else "contiguous", **(params_extra or {})}
    return Case(name, build, params, settings=dict(settings or {}))


def _module_case(name, make: Callable[[], nn.Module], x_shape, requires=(), params=None, dtype=torch.float32) -> Case:
    def build(device):
        with torch.device(device):
            model = make()
        model = model.to(device=device, dtype=dtype).eval()
        f, q = module_counts(model, x_shape, dtype)
        x = torch.randn(*x_shape, device=device, dtype=dtype)
        return Prepared(_no_grad(model, x), f, q, str(dtype).replace("torch.", ""))

    return Case(name, build, {"input": list(x_shape), **(params or {})}, requires=tuple(requires))


def _resnet50_shapes() -> list[dict]:
    """Distinct conv shapes of ResNet-50 at 224×224 (torchvision v1.5: the stride-2 on the 3×3)."""
    shapes, seen = [], set()

    def add(label, c_in, c_out, k, hw, stride):
        key = (c_in, c_out, k, hw, stride)
        if key not in seen:
            seen.add(key)
            shapes.append({"label": label, "c_in": c_in, "c_out": c_out, "k": k, "hw": hw, "stride": stride,
                           "full": f"{k}x{k}/{stride} {c_in}->{c_out} @{hw}"})

    add("conv1", 3, 64, 7, 224, 2)
    hw, c_in = 56, 64
    for stage, (mid, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=2):
        out = 4 * mid
        for b in range(blocks):
            stride = 2 if (b == 0 and stage > 2) else 1
            add(f"conv{stage}_x 1x1a", c_in, mid, 1, hw, 1)
            add(f"conv{stage}_x 3x3", mid, mid, 3, hw, stride)
            hw_out = (hw + 2 - 3) // stride + 1
            add(f"conv{stage}_x 1x1b", mid, out, 1, hw_out, 1)
            if b == 0:
                add(f"conv{stage}_x proj", c_in, out, 1, hw, stride)
            c_in, hw = out, hw_out
    return shapes


def _suite_resnet50_layers(size):
    """Full: the 23 distinct shapes at batch 32. Small: channels / 4 (the 3 RGB channels kept), sides / 2, batch 1."""
    cases = []
    for s in _resnet50_shapes():
        if size == "small":
            c_in, c_out, hw, batch = (s["c_in"] if s["c_in"] == 3 else s["c_in"] // 4), s["c_out"] // 4, (s["hw"] + 1) // 2, 1
        else:
            c_in, c_out, hw, batch = s["c_in"], s["c_out"], s["hw"], 32
        cases.append(_conv_case(f"{s['label']} {s['full']}", c_in, c_out, s["k"], hw, s["stride"], batch=batch,
                                params_extra={"resnet50_layer": s["full"]}))
    return cases


def _suite_algorithms(size):
    shapes = [(16, 28), (32, 14)] if size == "small" else [(64, 56), (128, 28), (256, 14)]
    batch = 1 if size == "small" else 32
    impls = [("torch F.conv2d", None), ("im2col+GEMM", "convbook.impl:conv2d_im2col"), ("FFT", "convbook.impl:conv2d_fft"),
             ("Winograd", "convbook.winograd:conv2d_winograd"), ("Triton implicit GEMM", "convbook.triton_conv:conv2d_triton")]
    cases = []
    for c, hw in shapes:
        for label, target in impls:
            def build(device, c=c, hw=hw, target=target):
                x, conv = _conv_inputs(device, batch, c, c, 3, hw, 1, 1, 1, torch.float32, False)
                f, q = conv_counts(x.shape, conv.weight.shape, 1, 1, 1, 1, 4)
                if target is None:
                    return Prepared(_no_grad(conv, x), f, q, "float32")
                impl = _resolve(target)
                w = conv.weight.detach()
                return Prepared(_no_grad_fn(lambda: impl(x, w, None, stride=1, padding=1)), f, q, "float32")

            cases.append(Case(f"{label} 3x3 {c}->{c} @{hw}", build,
                              {"algorithm": label, "batch": batch, "c_in": c, "c_out": c, "kernel": 3, "hw": hw, "padding": 1},
                              requires=(target,) if target else (),
                              cuda_only="the Triton kernel is timed on CUDA only (its CPU interpreter is a test harness, not a timing target)"
                              if target and "triton" in target else None))
    return cases


def _suite_grouped(size):
    hw, batch = (14, 1) if size == "small" else (56, 32)
    cases = []
    for card, width in ((1, 64), (2, 40), (4, 24), (8, 14), (32, 4)):
        inner = card * width

        def make(inner=inner, card=card):
            return nn.Sequential(nn.Conv2d(256, inner, 1, bias=False), nn.Conv2d(inner, inner, 3, padding=1, groups=card, bias=False),
                                 nn.Conv2d(inner, 256, 1, bias=False))

        cases.append(_module_case(f"C={card} d={width} (1x1 256->{inner}, 3x3 g={card}, 1x1 {inner}->256)", make,
                                  (batch, 256, hw, hw), params={"cardinality": card, "width": width}))
    return cases


def _suite_depthwise(size):
    c, hw, batch = (64, 14, 1) if size == "small" else (256, 28, 32)
    forms = {
        "dense 3x3": lambda: nn.Conv2d(c, c, 3, padding=1, bias=False),
        "depthwise 3x3": lambda: nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False),
        "depthwise-separable (dw 3x3 + pw 1x1)": lambda: nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False),
                                                                       nn.Conv2d(c, c, 1, bias=False)),
    }
    return [_module_case(f"{label} {c}ch @{hw}", make, (batch, c, hw, hw), params={"form": label}) for label, make in forms.items()]


def _suite_resnext_forms(size):
    c_in, card, width, hw, batch = (64, 8, 4, 14, 1) if size == "small" else (256, 32, 4, 56, 32)
    cases = []
    for form in ("a", "b", "c"):
        def make(form=form):
            return _resolve("convbook.grouped:resnext_block")(form, in_channels=c_in, cardinality=card, width=width, out_channels=c_in)

        cases.append(_module_case(f"form ({form}) {c_in}ch C={card} d={width} @{hw}", make, (batch, c_in, hw, hw),
                                  requires=("convbook.grouped:resnext_block",), params={"form": form}))
    return cases


def _suite_bn_fold(size):
    shapes = [(16, 28), (64, 14)] if size == "small" else [(64, 56), (256, 14)]
    batch = 1 if size == "small" else 32
    cases = []
    for c, hw in shapes:
        def pair(c=c):
            conv, bn = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
            g = generator(12)
            with torch.no_grad():
                bn.running_mean.copy_(torch.randn(c, generator=g, device="cpu"))
                bn.running_var.copy_(torch.rand(c, generator=g, device="cpu") + 0.5)
            return conv.eval(), bn.eval()

        cases.append(_module_case(f"conv+BN unfolded {c}ch @{hw}", lambda pair=pair: nn.Sequential(*pair()),
                                  (batch, c, hw, hw), params={"folded": False}))
        cases.append(_module_case(f"conv folded {c}ch @{hw}", lambda pair=pair: _resolve("convbook.fold:fold_conv_bn")(*pair()),
                                  (batch, c, hw, hw), requires=("convbook.fold:fold_conv_bn",), params={"folded": True}))
    return cases


def _suite_channels_last(size):
    shapes = [(16, 1, 28), (32, 3, 28), (64, 3, 14)] if size == "small" else [(64, 1, 56), (64, 3, 56), (256, 3, 14), (512, 3, 7)]
    batch = 1 if size == "small" else 32
    return [_conv_case(f"3x3 {c}->{c} @{hw} {fmt}" if k == 3 else f"1x1 {c}->{4 * c if k == 1 else c} @{hw} {fmt}",
                       c, 4 * c if k == 1 else c, k, hw, batch=batch, channels_last=fmt == "channels_last")
            for c, k, hw in shapes for fmt in ("contiguous", "channels_last")]


def _suite_precision(size):
    c, hw, batch = (32, 28, 1) if size == "small" else (256, 28, 32)
    cases = [
        _conv_case(f"fp32, TF32 off 3x3 {c}->{c} @{hw}", c, c, 3, hw, batch=batch, settings={"tf32": False}),
        _conv_case(f"fp32 inputs, TF32 on 3x3 {c}->{c} @{hw}", c, c, 3, hw, batch=batch, settings={"tf32": True}),
        _conv_case(f"bf16 3x3 {c}->{c} @{hw}", c, c, 3, hw, batch=batch, dtype=torch.bfloat16, settings={"tf32": False}),
    ]
    cases[1] = Case(cases[1].name, cases[1].build, cases[1].params,
                    cuda_only="TF32 is a CUDA tensor-core mode; on a CPU the flag changes nothing", settings={"tf32": True})
    return cases


def _suite_whole_network(size):
    res, batches = (64, (1, 2, 4)) if size == "small" else (224, (1, 32, 256))
    cases = []
    for model in ("resnet50", "resnext50_32x4d"):
        for b in batches:
            target = f"convbook.models:{model}"
            cases.append(_module_case(f"{model} batch {b} @{res}", lambda target=target: _resolve(target)(),
                                      (b, 3, res, res), requires=(target,), params={"model": model, "batch": b}))
    return cases


def _fast_case(name: str, algorithm: str, target: str, batch: int, c_in: int, c_out: int, k: int, hw: int,
               stride: int = 1, params_extra: dict | None = None, call_kwargs: dict | None = None,
               extra: Callable[[], dict] | None = None) -> Case:
    """One of the book's algorithms against ``F.conv2d`` on the same float32 tensors, timed interleaved."""
    pad = k // 2

    def build(device):
        impl = _resolve(target)
        gen = torch.Generator(device="cpu").manual_seed(hash((c_in, c_out, k, hw, batch)) % 2**31)
        x = torch.randn(batch, c_in, hw, hw, generator=gen).to(device)
        w = (torch.randn(c_out, c_in, k, k, generator=gen) / math.sqrt(c_in * k * k)).to(device)
        kwargs = dict(stride=stride, padding=pad, **(call_kwargs or {}))
        f, q = conv_counts(x.shape, w.shape, stride, pad, 1, 1, 4)
        with torch.no_grad():
            ref64 = F.conv2d(x.double(), w.double(), stride=stride, padding=pad)
            err = float(torch.linalg.vector_norm(impl(x, w, None, **kwargs).double() - ref64) / torch.linalg.vector_norm(ref64))
        info = {"float32_rel_error": err, **(extra() if extra else {})}
        return Prepared(_no_grad_fn(lambda: impl(x, w, None, **kwargs)), f, q, "float32",
                        reference=_no_grad_fn(lambda: F.conv2d(x, w, None, stride=stride, padding=pad)),
                        reference_label="F.conv2d", extra=info)

    params = {"algorithm": algorithm, "batch": batch, "c_in": c_in, "c_out": c_out, "kernel": k, "hw": hw, "stride": stride,
              "padding": pad, **(params_extra or {})}
    return Case(name, build, params, requires=(target,))


def _suite_fast_algorithms(size):
    """im2col on every distinct ResNet-50 conv shape; Winograd F(2,3) and F(4,3) on its four stride-1 3×3
    shapes; the FFT at growing kernels, 64 channels, 56×56 — each against F.conv2d, interleaved, one
    process. Full: the real shapes at batch 8. Small: channels / 4 (3 kept), sides / 2, batch 1; FFT 16
    channels, 28×28, batch 2."""
    small = size == "small"
    batch = 1 if small else 8

    def scale(c):
        return c if (not small or c == 3) else c // 4

    def side(hw):
        return (hw + 1) // 2 if small else hw

    cases = []
    for s in _resnet50_shapes():
        c_in, c_out, hw = scale(s["c_in"]), scale(s["c_out"]), side(s["hw"])
        cases.append(_fast_case(f"im2col {s['label']} {s['full']}", "im2col", "convbook.impl:conv2d_im2col", batch,
                                c_in, c_out, s["k"], hw, s["stride"], params_extra={"resnet50_layer": s["full"]}))
    for s in _resnet50_shapes():
        if s["k"] != 3 or s["stride"] != 1:
            continue
        c, hw = scale(s["c_in"]), side(s["hw"])
        for m in (2, 4):
            def extra(c=c, hw=hw, m=m):
                chosen = _resolve("convbook.winograd:choose_tile")(c, c, hw, hw, 3, 3, batch=batch)
                return {"m": m, "cost_model_tile": chosen}

            cases.append(_fast_case(f"Winograd F({m}x{m},3x3) {s['label']} {s['full']}", f"Winograd F({m},3)",
                                    "convbook.winograd:conv2d_winograd", batch, c, c, 3, hw,
                                    params_extra={"resnet50_layer": s["full"], "m": m}, call_kwargs={"m": m}, extra=extra))
    c, hw, fft_batch = (16, 28, 2) if small else (64, 56, 8)
    for k in (3, 5, 7, 9, 11, 13):
        def extra(c=c, hw=hw):
            return {"cost_model_crossover": _resolve("convbook.impl:fft_crossover_kernel")(hw, c, c)}

        cases.append(_fast_case(f"FFT {k}x{k} {c}->{c} @{hw} batch {fft_batch}", "FFT", "convbook.impl:conv2d_fft",
                                fft_batch, c, c, k, hw, extra=extra))
    return cases


SUITES: dict[str, Callable[[str], list[Case]]] = {
    "resnet50-layers": _suite_resnet50_layers,
    "algorithms": _suite_algorithms,
    "grouped-constant-macs": _suite_grouped,
    "depthwise": _suite_depthwise,
    "resnext-forms": _suite_resnext_forms,
    "bn-fold": _suite_bn_fold,
    "channels-last": _suite_channels_last,
    "precision": _suite_precision,
    "whole-network": _suite_whole_network,
    "fast-algorithms": _suite_fast_algorithms,
}


# --------------------------------------------------------------------------------------
# Private helpers
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _validator():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(RESULT_SCHEMA)
    return jsonschema.Draft202012Validator(RESULT_SCHEMA)


def _quantile(sorted_xs: list[float], p: float) -> float:
    h = (len(sorted_xs) - 1) * p
    lo = math.floor(h)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (h - lo) * (sorted_xs[hi] - sorted_xs[lo])


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _cost_conv_macs(c_in, c_out, k, hw, s, p, d, groups) -> int | None:
    """``convbook.cost.conv_macs`` for one input, or ``None`` when that module is absent or differs."""
    try:
        cost = importlib.import_module("convbook.cost")
        return int(cost.conv_macs(c_in, c_out, k, hw, stride=s, padding=p, dilation=d, groups=groups))
    except Exception:  # the cost module is optional here: fall back to the formula
        return None


def _conv_inputs(device, batch, c_in, c_out, k, hw, stride, pad, groups, dtype, channels_last):
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad, groups=groups, bias=False, device=device, dtype=dtype).eval()
    x = torch.randn(batch, c_in, hw, hw, device=device, dtype=dtype)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return x, conv


def _no_grad(module, x):
    def fn():
        with torch.no_grad():
            return module(x)

    return fn


def _no_grad_fn(f):
    def fn():
        with torch.no_grad():
            return f()

    return fn


def _resolve(target: str):
    module_name, attr = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise Skip(f"{module_name} is not available ({type(exc).__name__}: {exc})") from None
    if not hasattr(module, attr):
        raise Skip(f"{module_name} has no {attr} yet")
    return getattr(module, attr)


def _unavailable(case: Case, device: str) -> str | None:
    if case.cuda_only and not device.startswith("cuda"):
        return case.cuda_only
    for target in case.requires:
        try:
            _resolve(target)
        except Skip as exc:
            return str(exc)
    return None


@contextlib.contextmanager
def _backend_settings(settings: dict, device: str):
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        if "tf32" in settings:
            torch.backends.cuda.matmul.allow_tf32 = bool(settings["tf32"])
            torch.backends.cudnn.allow_tf32 = bool(settings["tf32"])
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _cpu_name() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cpu_mhz() -> float | None:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return round(float(line.split(":", 1)[1]), 1)
    except (OSError, ValueError):
        pass
    return None


def _nvidia_smi(index: int) -> dict:
    fields = ["driver_version", "clocks.sm", "clocks.mem", "clocks.max.sm", "clocks.max.mem", "power.limit"]
    try:
        out = subprocess.run(["nvidia-smi", f"--id={index}", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    values = [v.strip() for v in out.split(",")]
    return dict(zip(fields, values)) if len(values) == len(fields) else {}


def _progress_bar(stream):
    def report(i: int, n: int, name: str) -> None:
        width = 24
        done = int(width * i / n) if n else width
        line = f"[{'#' * done}{'.' * (width - done)}] {min(i + 1, n)}/{n} {name:<50.50}"
        if stream.isatty():
            stream.write("\r" + line + ("\n" if i == n else ""))
        else:
            stream.write(line.rstrip() + "\n")
        stream.flush()

    return report


def _broken_variants(data: dict):
    """Copies of a valid result with one realistic defect each (for the schema claim and tests)."""
    def mutate(fn):
        d = json.loads(json.dumps(data))
        fn(d)
        return d

    yield "no device field", mutate(lambda d: d.pop("device"))
    yield "cases as a dict", mutate(lambda d: d.__setitem__("cases", {"0": d["cases"][0]}))
    yield "a wrong schema id", mutate(lambda d: d.__setitem__("schema", "convbook.bench/0"))
    ok = [i for i, c in enumerate(data["cases"]) if c["status"] == "ok"]
    if ok:
        i = ok[0]
        yield "a negative sample", mutate(lambda d: d["cases"][i]["samples_s"].__setitem__(0, -1e-3))
        yield "a median that does not match its samples", mutate(lambda d: d["cases"][i].__setitem__("median_s", d["cases"][i]["median_s"] * 1.5))
        yield "FLOPs as a string", mutate(lambda d: d["cases"][i].__setitem__("flops", str(d["cases"][i]["flops"])))
        yield "a skipped case without a reason", mutate(lambda d: d["cases"][i].update(status="skipped", reason=None, samples_s=[]))
