"""Chapter 12: what the compiler makes of the Triton convolution kernel, for GPUs that are not here.

Triton compiles for a named target without a GPU: ``triton.compile`` lowers the kernel of
:mod:`convbook.triton_conv` to PTX for ``sm_90`` (H100, H200) or ``sm_80`` (A100), and the
``ptxas`` shipped in Triton's wheel assembles it, reporting the registers per thread and the
bytes spilled to local memory; Triton's metadata gives the shared memory the kernel
allocates.  :func:`compile_report` collects these and counts the tensor-core and FMA
instructions in the PTX (static counts: an instruction inside the reduction loop counts once,
though it runs ``⌈K / BLOCK_K⌉`` times).

The compile runs in a child process with ``TRITON_INTERPRET=0``: on a machine without CUDA,
importing :mod:`convbook.triton_conv` turns on Triton's interpreter mode, in which Triton's
own library functions become interpreter objects and ``triton.compile`` fails (``'value'
object has no attribute 'dtype'``).  Registers and spills are read from ``ptxas -v`` (the
same figures as ``cuobjdump -res-usage``'s REG and STACK, plus the spill stores).

From those resources and each architecture's published per-SM limits (:data:`SM_LIMITS`),
:func:`blocks_per_sm` derives how many programs of the kernel an SM holds at once;
:func:`waves` how many rounds the SMs of a device need for one layer's tiles and the
wave-quantization efficiency ``tiles / (waves · concurrent)``; :func:`predict_layer` the time
of one ResNet-50 layer: the roofline (the bound an ideal library such as cuDNN approaches) and
the prediction for this kernel (roofline over the wave efficiency and a stated efficiency
factor :data:`KERNEL_EFFICIENCY`).

**Status of these figures.** Registers, spills, shared memory and instruction counts are
*facts about the compiled code*, reproduced by every compile (``tests/test_gpu_compile.py``
checks the recorded file against a fresh compile).  Occupancy, waves and times are *derived*
from those facts, from NVIDIA's published limits and from stated assumptions; no GPU has run
the kernel, and they are checked on hardware only once a GPU is available.

**Predictions are recorded before measurement and never edited after.**
``notebooks/data/gpu/predictions.json`` is written by :func:`write_predictions` (via
``tools/gpu_predict.py``), which refuses to overwrite it once a measured GPU result exists
(a ``cuda`` result in ``notebooks/data/bench`` or a ``notebooks/data/gpu/measured*.json``):
a prediction changed after the measurement it predicts is no longer a prediction.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from functools import lru_cache

from .triton_conv import CONFIGS, MODES, TileConfig, pick_config

__all__ = [
    "formula_mismatches",
    "TARGETS",
    "SM_LIMITS",
    "DEVICES",
    "KERNEL_EFFICIENCY",
    "DEFAULT_LAYER",
    "CompileReport",
    "compile_report",
    "compile_reports",
    "count_instructions",
    "parse_ptxas_log",
    "blocks_per_sm",
    "occupancy",
    "tile_count",
    "waves",
    "layer_counts",
    "resnet50_layers",
    "predict_layer",
    "predictions",
    "compiled_records",
    "measured_gpu_results",
    "write_predictions",
    "validate_compiled",
    "validate_predictions",
    "load_json",
    "DATA_DIR",
    "instruction_formula",
    "format_compiled",
    "format_waves",
    "totals",
    "plot_wave_efficiency",
    "write_compiled",
]

#: Where the recorded compile reports and predictions live.
DATA_DIR = pathlib.Path(__file__).resolve().parents[2] / "notebooks" / "data" / "gpu"

#: Compute capability of each target name.
TARGETS: dict[str, int] = {"sm_90": 90, "sm_80": 80}

#: Per-SM limits of each target, from the CUDA C++ Programming Guide's table "Technical
#: Specifications per Compute Capability" (compute capabilities 8.0 and 9.0): 64 K 32-bit
#: registers, at most 255 per thread, 64 resident warps, 32 resident blocks, 228 KB (9.0) /
#: 164 KB (8.0) of shared memory per SM of which a block may use 227 KB / 163 KB, and 1 KB
#: per block reserved by the system.  Allocation granularities as in NVIDIA's occupancy
#: calculator (Nsight Compute): registers in units of 256 per warp, warps in groups of 4,
#: shared memory in units of 128 bytes.
SM_LIMITS: dict[str, dict[str, int]] = {
    "sm_90": dict(registers=65536, max_registers_per_thread=255, max_warps=64, max_blocks=32,
                  shared_per_sm=228 * 1024, shared_per_block=227 * 1024, shared_reserved_per_block=1024,
                  register_unit=256, warp_granularity=4, shared_unit=128),
    "sm_80": dict(registers=65536, max_registers_per_thread=255, max_warps=64, max_blocks=32,
                  shared_per_sm=164 * 1024, shared_per_block=163 * 1024, shared_reserved_per_block=1024,
                  register_unit=256, warp_granularity=4, shared_unit=128),
}

#: The devices predicted: target, SM count, dense tensor-core peaks (FLOP/s) and HBM bandwidth
#: (byte/s), from NVIDIA's datasheets (the sparsity figures halved; SXM parts).
DEVICES: dict[str, dict] = {
    "H100-SXM": dict(target="sm_90", sms=132, peak={"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12},
                     bandwidth=3.35e12,
                     source="NVIDIA H100 Tensor Core GPU datasheet (SXM): BF16 1,979 and TF32 989 TFLOP/s with "
                            "sparsity (dense: half), HBM3 3.35 TB/s; 132 SMs (NVIDIA H100 whitepaper)"),
    "H200": dict(target="sm_90", sms=132, peak={"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12},
                 bandwidth=4.8e12,
                 source="NVIDIA H200 Tensor Core GPU datasheet (SXM): BF16 1,979 and TF32 989 TFLOP/s with "
                        "sparsity (dense: half), HBM3e 4.8 TB/s; the same GH100 chip with 132 SMs"),
}

#: Stated assumption, not a measurement: the fraction of the tensor-core peak a full wave of
#: this kernel sustains.  It gathers its input tile with computed addresses (no TMA, no
#: warp specialization), which published Hopper GEMMs need to approach the peak.
KERNEL_EFFICIENCY = 0.5

#: The layer a compile report specializes the kernel for when none is given:
#: ResNet-50's ``conv2_x`` 3×3 convolution (64 → 64 channels, 3×3, stride 1).
DEFAULT_LAYER = dict(c_in=64, c_out=64, kernel=3, stride=1, groups=1)

_PTR = {"bf16": "*bf16", "fp16": "*fp16", "tf32": "*fp32", "fp32-ieee": "*fp32", "fp64": "*fp64"}
_ITEMSIZE = {"bf16": 2, "fp16": 2, "tf32": 4, "fp32-ieee": 4, "fp64": 8}


@dataclass(frozen=True)
class CompileReport:
    """Resources and instruction mix of the kernel compiled for one target, mode and tile."""

    target: str
    dtype: str
    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int
    registers: int
    spill_bytes: int
    """bytes of spill stores per thread (ptxas); 0 when everything fits in registers"""
    stack_bytes: int
    shared_bytes: int
    wgmma: int
    mma: int
    fma: int
    cp_async: int
    """``cp.async`` copies (global → shared without registers): what Triton's software pipeline
    uses; 0 means the loads go through registers and ``num_stages`` has nothing to overlap"""
    ld_global: int
    blocks_per_sm: int
    limiter: str
    fits_shared: bool

    @property
    def spills(self) -> bool:
        return self.spill_bytes > 0

    def as_record(self) -> dict:
        rec = asdict(self)
        rec["spills"] = self.spills
        return rec


def compile_report(target: str = "sm_90", dtype: str = "bf16", block_m: int = 128, block_n: int = 128,
                   block_k: int = 32, num_warps: int = 8, num_stages: int = 3, layer: dict | None = None,
                   ptx: bool = False) -> CompileReport | tuple[CompileReport, str]:
    """Compile the kernel of :mod:`convbook.triton_conv` for ``target`` (``"sm_90"``: H100/H200,
    ``"sm_80"``: A100) in ``dtype`` (a mode of :data:`convbook.triton_conv.MODES`) with one tile
    configuration, without a GPU, and report its resources.

    The kernel is specialized as Triton's launcher would specialize it for a contiguous,
    undilated NCHW layer ``layer`` (default :data:`DEFAULT_LAYER`): the channel and kernel
    sizes are compile-time constants, the unit strides of the last axis and the dilations
    are the constant 1, pointers are 16-byte aligned, offsets are 32-bit (tensors of fewer
    than 2^31 elements) and there is no bias.  Nothing is cached between calls (a
    fresh Triton cache directory each time).

    Returns a :class:`CompileReport` (with the PTX text too when ``ptx=True``): registers per
    thread and spill-store bytes from ``ptxas -v``, shared memory from Triton's metadata,
    static counts of ``wgmma.mma_async``, ``mma.sync`` and ``fma`` instructions in the PTX,
    :func:`blocks_per_sm` and whether the shared memory fits one SM's per-block limit.
    A configuration that spills has ``spill_bytes > 0`` (``spills`` in its record); one whose
    shared memory exceeds the target's per-block limit has ``fits_shared=False`` and 0 blocks
    per SM.

    Raises ``ValueError`` for an unknown target or dtype, ``RuntimeError`` when Triton is missing.
    """
    rep = compile_reports([dict(target=target, dtype=dtype, block_m=block_m, block_n=block_n, block_k=block_k,
                                num_warps=num_warps, num_stages=num_stages, layer=layer)], ptx=ptx)[0]
    return rep


def compile_reports(jobs: list[dict], ptx: bool = False) -> list:
    """:func:`compile_report` for each dict of its arguments in ``jobs``, compiled in one child
    process (Python and Triton start once)."""
    full = []
    for job in jobs:
        target, dtype = job.get("target", "sm_90"), job.get("dtype", "bf16")
        if target not in TARGETS:
            raise ValueError(f"target must be one of {sorted(TARGETS)}, got {target!r}")
        if dtype not in MODES:
            raise ValueError(f"dtype must be one of {MODES}, got {dtype!r}")
        cfg = TileConfig(*(job.get(k, d) for k, d in (("block_m", 128), ("block_n", 128), ("block_k", 32),
                                                       ("num_warps", 8), ("num_stages", 3))))
        full.append(dict(target=target, dtype=dtype, cfg=asdict(cfg), layer={**DEFAULT_LAYER, **(job.get("layer") or {})}))
    out = []
    for job, res in zip(full, _compile_batch(full)):
        cfg = TileConfig(**job["cfg"])
        regs = parse_ptxas_log(res["log"])
        mix = count_instructions(res["ptx"])
        shared = res["shared"]
        occ = occupancy(job["target"], regs["registers"], shared, cfg.num_warps)
        rep = CompileReport(job["target"], job["dtype"], cfg.block_m, cfg.block_n, cfg.block_k, cfg.num_warps,
                            cfg.num_stages, regs["registers"], regs["spill_bytes"], regs["stack_bytes"], shared,
                            mix["wgmma"], mix["mma"], mix["fma"], mix["cp_async"], mix["ld_global"],
                            occ["blocks_per_sm"], occ["limiter"],
                            shared <= SM_LIMITS[job["target"]]["shared_per_block"])
        out.append((rep, res["ptx"]) if ptx else rep)
    return out


def count_instructions(ptx: str) -> dict[str, int]:
    """Static counts of instructions in PTX text: ``wgmma`` (``wgmma.mma_async``, Hopper's
    warpgroup tensor-core MMA), ``mma`` (``mma.sync``, the warp-level tensor-core MMA of
    Ampere, also used for float64 on both), ``fma`` (``fma.rn`` on f32/f64 scalars),
    ``cp_async`` (``cp.async.ca/cg``: asynchronous global → shared copies) and ``ld_global``
    (loads from global memory into registers)."""
    return {
        "wgmma": len(re.findall(r"^\s*wgmma\.mma_async\b", ptx, re.M)),
        "mma": len(re.findall(r"^\s*mma\.sync\b", ptx, re.M)),
        "fma": len(re.findall(r"^\s*fma\.rn(?:\.ftz)?\.f(?:32|64)\b", ptx, re.M)),
        "cp_async": len(re.findall(r"^\s*cp\.async\.(?:ca|cg)\b", ptx, re.M)),
        "ld_global": len(re.findall(r"^\s*(?:@%p\d+\s+)?ld\.global\b", ptx, re.M)),
    }


def parse_ptxas_log(log: str) -> dict[str, int]:
    """Registers, stack frame and spill-store bytes from ``ptxas -v`` output
    (``Used R registers``, ``S bytes stack frame, T bytes spill stores, L bytes spill loads``)."""
    regs = re.search(r"Used (\d+) registers", log)
    frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if regs is None or frame is None:
        raise RuntimeError(f"ptxas -v output not understood:\n{log}")
    return {"registers": int(regs.group(1)), "stack_bytes": int(frame.group(1)),
            "spill_bytes": int(frame.group(2)), "spill_load_bytes": int(frame.group(3))}


def occupancy(target: str, registers: int, shared_bytes: int, num_warps: int) -> dict:
    """Resident blocks per SM and which limit binds, from :data:`SM_LIMITS` of ``target``.

    * registers: each warp holds ``⌈32·R / 256⌉·256`` of the SM's 65,536; the warps that fit
      are rounded down to a multiple of 4, then divided among ``num_warps`` per block;
    * shared memory: each block takes ``⌈(S + 1 KB) / 128⌉·128`` bytes of the SM's
      228 KB (sm_90) / 164 KB (sm_80); a block asking more than 227 KB / 163 KB cannot launch;
    * warps: 64 per SM; blocks: 32 per SM.

    ``blocks_per_sm`` is the smallest of the four (0: the kernel cannot launch); ``limiter``
    names it; ``warps_per_sm`` and ``occupancy`` (resident warps / 64) follow.
    """
    lim = SM_LIMITS[target]
    if registers < 1 or registers > lim["max_registers_per_thread"]:
        raise ValueError(f"registers per thread must be in 1..{lim['max_registers_per_thread']}, got {registers}")
    if num_warps < 1:
        raise ValueError(f"num_warps must be >= 1, got {num_warps}")
    per_warp = math.ceil(32 * registers / lim["register_unit"]) * lim["register_unit"]
    warps_fit = lim["registers"] // per_warp
    warps_fit -= warps_fit % lim["warp_granularity"]
    by = {"registers": warps_fit // num_warps}
    if shared_bytes > lim["shared_per_block"]:
        by["shared memory"] = 0
    else:
        per_block = math.ceil((shared_bytes + lim["shared_reserved_per_block"]) / lim["shared_unit"]) * lim["shared_unit"]
        by["shared memory"] = lim["shared_per_sm"] // per_block
    by["warps"] = lim["max_warps"] // num_warps
    by["blocks"] = lim["max_blocks"]
    limiter = min(by, key=lambda k: by[k])
    blocks = by[limiter]
    return {"blocks_per_sm": blocks, "limiter": limiter, "by": by, "warps_per_sm": blocks * num_warps,
            "occupancy": blocks * num_warps / lim["max_warps"]}


def blocks_per_sm(target: str, registers: int, shared_bytes: int, num_warps: int) -> int:
    """Resident blocks per SM (:func:`occupancy`)."""
    return occupancy(target, registers, shared_bytes, num_warps)["blocks_per_sm"]


def tile_count(m_total: int, c_out_g: int, groups: int, block_m: int, block_n: int) -> int:
    """Programs in the kernel's grid: ``⌈m_total / block_m⌉ · ⌈c_out_g / block_n⌉ · groups``."""
    return math.ceil(m_total / block_m) * math.ceil(c_out_g / block_n) * groups


def waves(tiles: int, sms: int, blocks_per_sm_: int) -> dict:
    """Waves of ``tiles`` equal programs over ``sms`` SMs holding ``blocks_per_sm_`` each.

    ``concurrent = sms · blocks_per_sm``, ``waves = ⌈tiles / concurrent⌉`` and the
    wave-quantization efficiency ``tiles / (waves · concurrent)``: the share of the SM slots
    busy, averaged over the waves (1 when the tiles fill every wave; the last, partial wave
    costs a whole wave's time when every program takes equally long).
    """
    if tiles < 1 or sms < 1 or blocks_per_sm_ < 1:
        raise ValueError(f"tiles, sms and blocks_per_sm must be >= 1, got {tiles}, {sms}, {blocks_per_sm_}")
    concurrent = sms * blocks_per_sm_
    n = math.ceil(tiles / concurrent)
    return {"tiles": tiles, "concurrent": concurrent, "waves": n, "efficiency": tiles / (n * concurrent)}


def resnet50_layers(batch: int = 32) -> list[dict]:
    """The 53 convolutions of ResNet-50 at 224×224 (torchvision; :func:`convbook.models.resnet50_conv_shapes`)
    as ``{name, c_in, c_out, kernel, stride, padding, groups, hw, hw_out, batch}``."""
    rows = []
    for s in _resnet50_shapes():
        rows.append(dict(name=s["name"], c_in=s["in_channels"], c_out=s["out_channels"], kernel=s["kernel_size"][0],
                         stride=s["stride"][0], padding=s["padding"][0], groups=s["groups"], hw=s["input_size"][0],
                         hw_out=s["output_size"][0], batch=batch))
    return rows


def layer_counts(layer: dict, itemsize: int) -> tuple[int, int]:
    """FLOPs and compulsory bytes of one layer (``convbook.bench.conv_counts``: input, weight, output)."""
    from .bench import conv_counts

    return conv_counts((layer["batch"], layer["c_in"], layer["hw"], layer["hw"]),
                       (layer["c_out"], layer["c_in"] // layer["groups"], layer["kernel"], layer["kernel"]),
                       stride=layer["stride"], padding=layer["padding"], groups=layer["groups"], itemsize=itemsize)


def predict_layer(layer: dict, device: str, dtype: str, blocks: dict[tuple[str, str, str], int],
                  efficiency: float = KERNEL_EFFICIENCY) -> dict:
    """One prediction record: a ResNet-50 ``layer`` on ``device`` (:data:`DEVICES`) in ``dtype``.

    ``flops``, ``bytes`` (:func:`layer_counts` at the dtype's element size), ``roofline_s =
    max(F / P, Q / B)`` (the bound for any implementation, cuDNN included), the tile chosen by
    :func:`pick_config`, its tiles and :func:`waves` with ``blocks`` (``{(target, dtype,
    config name): blocks per SM}`` from the compile reports), and ``predicted_s = max(F / (P ·
    efficiency · wave_efficiency), Q / B)`` for this kernel.
    """
    dev = DEVICES[device]
    peak, bw = dev["peak"][dtype], dev["bandwidth"]
    flops, nbytes = layer_counts(layer, _ITEMSIZE[dtype])
    m_total = layer["batch"] * layer["hw_out"] ** 2
    c_out_g = layer["c_out"] // layer["groups"]
    cfg = pick_config(m_total, c_out_g, layer["groups"], dtype, sm_count=dev["sms"])
    tiles = tile_count(m_total, c_out_g, layer["groups"], cfg.block_m, cfg.block_n)
    w = waves(tiles, dev["sms"], blocks[(dev["target"], dtype, cfg.name)])
    roof = max(flops / peak, nbytes / bw)
    pred = max(flops / (peak * efficiency * w["efficiency"]), nbytes / bw)
    keys = ("name", "c_in", "c_out", "kernel", "stride", "padding", "groups", "hw", "hw_out", "batch")
    return dict(layer={k: layer[k] for k in keys}, device=device, dtype=dtype, target=dev["target"],
                flops=flops, bytes=nbytes, roofline_s=roof, bound="memory" if nbytes / bw > flops / peak else "compute",
                config=cfg.name, tiles=tiles, blocks_per_sm=w["concurrent"] // dev["sms"], waves=w["waves"],
                wave_efficiency=w["efficiency"], kernel_efficiency=efficiency, predicted_s=pred)


def compiled_records(targets=("sm_90", "sm_80"), dtypes=MODES) -> list[dict]:
    """A compile report (:meth:`CompileReport.as_record`, plus the configuration's name) for
    every target × dtype × configuration of :data:`convbook.triton_conv.CONFIGS` (what
    ``compiled.json`` holds)."""
    jobs = [dict(target=t, dtype=d, **asdict(c)) for t in targets for d in dtypes for c in CONFIGS[d]]
    return [{**rep.as_record(), "config": TileConfig(rep.block_m, rep.block_n, rep.block_k, rep.num_warps,
                                                      rep.num_stages).name} for rep in compile_reports(jobs)]


def predictions(compiled: list[dict], batch: int = 32, devices=("H100-SXM", "H200"), dtypes=("bf16", "tf32")) -> list[dict]:
    """A :func:`predict_layer` record for every ResNet-50 conv × device × dtype, with blocks per SM
    read from ``compiled`` records (``compiled.json``)."""
    blocks = {(r["target"], r["dtype"], r["config"]): r["blocks_per_sm"] for r in compiled}
    layers = resnet50_layers(batch)
    return [predict_layer(layer, dev, dt, blocks) for dev in devices for dt in dtypes for layer in layers]


NOTE = ("Derived, not measured: registers, spills, shared memory and instruction counts come from compiling the "
        "kernel with Triton 3.9 for the target without a GPU; blocks per SM, waves and times are derived from them, "
        "from NVIDIA's published per-SM limits and peaks, and from the stated kernel efficiency. No GPU has run "
        "this kernel; these figures are checked on hardware only once a GPU is available. Predictions are never "
        "edited after a measurement exists.")


def measured_gpu_results(bench_dir: str | os.PathLike | None = None, gpu_dir: str | os.PathLike | None = None) -> list[pathlib.Path]:
    """Measured GPU result files: ``cuda`` results in ``notebooks/data/bench`` and
    ``notebooks/data/gpu/measured*.json``."""
    bench_dir = pathlib.Path(bench_dir) if bench_dir is not None else DATA_DIR.parent / "bench"
    gpu_dir = pathlib.Path(gpu_dir) if gpu_dir is not None else DATA_DIR
    found = sorted(gpu_dir.glob("measured*.json")) if gpu_dir.is_dir() else []
    for p in sorted(bench_dir.glob("*.json")) if bench_dir.is_dir() else []:
        try:
            kind = json.loads(p.read_text(encoding="utf-8")).get("device", {}).get("kind")
        except (ValueError, AttributeError):
            continue
        if kind == "cuda":
            found.append(p)
    return found


def write_predictions(records: list[dict], path: str | os.PathLike | None = None, *, compiled_path: str | os.PathLike | None = None,
                      bench_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Write ``predictions.json`` (validated); refuses (``RuntimeError``) when the file exists and
    a measured GPU result exists (:func:`measured_gpu_results`): predictions are never edited
    after a measurement."""
    path = pathlib.Path(path) if path is not None else DATA_DIR / "predictions.json"
    measured = measured_gpu_results(bench_dir, path.parent)
    if path.exists() and measured:
        raise RuntimeError(f"refusing to overwrite {path}: measured GPU results exist ({', '.join(p.name for p in measured)}); "
                           "predictions are never edited after a measurement")
    data = {"schema": "convbook.gpu-predictions/1", "note": NOTE, "kernel_efficiency": KERNEL_EFFICIENCY,
            "devices": {k: {kk: v[kk] for kk in ("target", "sms", "peak", "bandwidth", "source")} for k, v in DEVICES.items()},
            "compiled_from": str(compiled_path) if compiled_path else "compiled.json", "records": records}
    validate_predictions(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


def write_compiled(records: list[dict], path: str | os.PathLike | None = None) -> pathlib.Path:
    """Write ``compiled.json`` (validated) with the Triton version and the limits used."""
    import triton

    path = pathlib.Path(path) if path is not None else DATA_DIR / "compiled.json"
    data = {"schema": "convbook.gpu-compiled/1", "note": NOTE, "triton": triton.__version__,
            "layer": DEFAULT_LAYER, "sm_limits": SM_LIMITS, "records": records}
    validate_compiled(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


_COMPILED_FIELDS = {"target": str, "dtype": str, "config": str, "block_m": int, "block_n": int, "block_k": int,
                    "num_warps": int, "num_stages": int, "registers": int, "spill_bytes": int, "stack_bytes": int,
                    "shared_bytes": int, "wgmma": int, "mma": int, "fma": int, "cp_async": int, "ld_global": int,
                    "blocks_per_sm": int, "limiter": str,
                    "fits_shared": bool, "spills": bool}
_PRED_FIELDS = {"layer": dict, "device": str, "dtype": str, "target": str, "flops": int, "bytes": int,
                "roofline_s": float, "bound": str, "config": str, "tiles": int, "blocks_per_sm": int, "waves": int,
                "wave_efficiency": float, "kernel_efficiency": float, "predicted_s": float}
_LAYER_FIELDS = ("name", "c_in", "c_out", "kernel", "stride", "padding", "groups", "hw", "hw_out", "batch")


def _check_fields(rec: dict, fields: dict, where: str) -> None:
    missing = [k for k in fields if k not in rec]
    if missing:
        raise ValueError(f"{where}: missing fields {missing}")
    for k, ty in fields.items():
        v = rec[k]
        ok = isinstance(v, ty) and not (ty is int and isinstance(v, bool))
        if ty is float:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
        if not ok:
            raise ValueError(f"{where}: field {k!r} must be {ty.__name__}{' > 0' if ty is float else ''}, got {v!r}")


def validate_compiled(data: dict) -> dict:
    """Check ``compiled.json``'s schema; ``ValueError`` naming the first bad field."""
    if data.get("schema") != "convbook.gpu-compiled/1" or not data.get("note") or not isinstance(data.get("records"), list):
        raise ValueError("compiled.json: needs schema 'convbook.gpu-compiled/1', a note and a records list")
    for i, r in enumerate(data["records"]):
        _check_fields(r, _COMPILED_FIELDS, f"compiled.json record {i}")
        if r["target"] not in TARGETS or r["dtype"] not in MODES:
            raise ValueError(f"compiled.json record {i}: unknown target/dtype {r['target']}/{r['dtype']}")
        if r["spills"] != (r["spill_bytes"] > 0):
            raise ValueError(f"compiled.json record {i}: spills disagrees with spill_bytes")
    return data


def validate_predictions(data: dict) -> dict:
    """Check ``predictions.json``'s schema and arithmetic (``roofline_s = max(F/P, Q/B)``,
    ``predicted_s ≥ roofline_s``); ``ValueError`` naming the first bad field."""
    if data.get("schema") != "convbook.gpu-predictions/1" or not data.get("note") or not isinstance(data.get("records"), list):
        raise ValueError("predictions.json: needs schema 'convbook.gpu-predictions/1', a note and a records list")
    devices = data.get("devices", {})
    for i, r in enumerate(data["records"]):
        where = f"predictions.json record {i}"
        _check_fields(r, _PRED_FIELDS, where)
        if any(k not in r["layer"] for k in _LAYER_FIELDS):
            raise ValueError(f"{where}: layer needs {_LAYER_FIELDS}")
        dev = devices.get(r["device"])
        if dev is None or r["dtype"] not in dev["peak"] or not dev.get("source"):
            raise ValueError(f"{where}: device {r['device']!r} / dtype {r['dtype']!r} has no recorded peak with a source")
        roof = max(r["flops"] / dev["peak"][r["dtype"]], r["bytes"] / dev["bandwidth"])
        if not math.isclose(r["roofline_s"], roof, rel_tol=1e-12):
            raise ValueError(f"{where}: roofline_s {r['roofline_s']} != max(F/P, Q/B) = {roof}")
        if r["predicted_s"] < r["roofline_s"] * (1 - 1e-12):
            raise ValueError(f"{where}: predicted_s {r['predicted_s']} is below the roofline {r['roofline_s']}")
    return data


def load_json(name: str, directory: str | os.PathLike | None = None) -> dict:
    """``compiled.json`` or ``predictions.json`` from ``notebooks/data/gpu``, validated."""
    path = pathlib.Path(directory or DATA_DIR) / name
    data = json.loads(path.read_text(encoding="utf-8"))
    return validate_compiled(data) if name.startswith("compiled") else validate_predictions(data)


def instruction_formula(target: str, dtype: str, block_m: int, block_n: int, block_k: int, num_warps: int) -> dict[str, int]:
    """The instruction counts one reduction step should compile to, from the tile and the
    instruction shapes (PTX ISA), per thread or warp as the instruction is issued:

    * ``fp32-ieee``: every thread owns ``block_m·block_n / (32·num_warps)`` outputs and does
      ``block_k`` multiply-adds for each: ``fma = block_m·block_n·block_k / (32·num_warps)``;
    * ``wgmma`` (sm_90, a warpgroup of 4 warps computes 64 rows × ``block_n``, ``k`` = 32 bytes
      of input: 16 for fp16/bf16, 8 for TF32): ``block_m / (64·num_warps/4) · block_k / k``;
    * ``mma.sync`` (sm_80, and float64 on both; one warp computes ``m16n8k16`` for fp16/bf16,
      ``m16n8k8`` for TF32, ``m8n8k4`` for float64): ``block_m·block_n / (num_warps·m·n) · block_k / k``;
    * ``ld_global``, for the 16-bit modes: one scalar load per gathered element,
      ``(block_m + block_n)·block_k / (32·num_warps)``.
    """
    threads = 32 * num_warps
    out = {"wgmma": 0, "mma": 0, "fma": 0}
    if dtype == "fp32-ieee":
        out["fma"] = block_m * block_n * block_k // threads
    elif dtype == "fp64":
        out["mma"] = block_m * block_n // (num_warps * 8 * 8) * (block_k // 4)
    elif target == "sm_90":
        out["wgmma"] = block_m // (64 * num_warps // 4) * (block_k // (16 if dtype in ("bf16", "fp16") else 8))
    else:
        m, n, k = (16, 8, 16) if dtype in ("bf16", "fp16") else (16, 8, 8)
        out["mma"] = block_m * block_n // (num_warps * m * n) * (block_k // k)
    if dtype in ("bf16", "fp16"):
        out["ld_global"] = (block_m + block_n) * block_k // threads
    return out



def formula_mismatches(records: list[dict]) -> list[dict]:
    """The compiled records whose instruction counts differ from :func:`instruction_formula`
    (empty when every compiled configuration compiles to the counts the tile predicts)."""
    return [r for r in records
            if any(r[k] != v for k, v in instruction_formula(r["target"], r["dtype"], r["block_m"], r["block_n"],
                                                             r["block_k"], r["num_warps"]).items())]

def format_compiled(records: list[dict], targets=("sm_90", "sm_80"), dtypes=MODES, configs=None) -> str:
    """A fixed-width table of compile records: registers, spill bytes, shared KB, instruction
    counts and blocks per SM."""
    head = (f"{'target':<6} {'mode':<9} {'tile':<17} {'regs':>4} {'spill B':>7} {'smem KB':>7} {'wgmma':>5} "
            f"{'mma':>4} {'fma':>5} {'cp.async':>8} {'ld.global':>9} {'blocks/SM':>9}  limit")
    lines = [head, "-" * len(head)]
    for r in records:
        if r["target"] not in targets or r["dtype"] not in dtypes or (configs and r["config"] not in configs):
            continue
        lines.append(f"{r['target']:<6} {r['dtype']:<9} {r['config']:<17} {r['registers']:>4} {r['spill_bytes']:>7} "
                     f"{r['shared_bytes'] / 1024:>7.0f} {r['wgmma']:>5} {r['mma']:>4} {r['fma']:>5} {r['cp_async']:>8} "
                     f"{r['ld_global']:>9} {r['blocks_per_sm']:>9}  {r['limiter']}")
    return "\n".join(lines)


def format_waves(records: list[dict], device: str = "H100-SXM", dtype: str = "bf16", distinct: bool = True) -> str:
    """A fixed-width table of prediction records of one device and dtype: the layer, its tile,
    tiles, waves, wave efficiency, bound kind, roofline and predicted time (µs).  With
    ``distinct``, one row per distinct layer shape (the first layer that has it), with the
    number of layers sharing it."""
    head = (f"{'layer':<21} {'shape':<21} {'x':>2} {'tile':<16} {'tiles':>5} {'waves':>5} {'eff':>5} {'bound':<7} "
            f"{'roof us':>7} {'pred us':>7}")
    lines = [head, "-" * len(head)]
    rows = [r for r in records if r["device"] == device and r["dtype"] == dtype]
    count: dict[tuple, int] = {}
    for r in rows:
        key = tuple(r["layer"][k] for k in ("c_in", "c_out", "kernel", "stride", "hw"))
        count[key] = count.get(key, 0) + 1
    shown = set()
    for r in rows:
        l = r["layer"]
        key = tuple(l[k] for k in ("c_in", "c_out", "kernel", "stride", "hw"))
        if distinct and key in shown:
            continue
        shown.add(key)
        shape = f"{l['kernel']}x{l['kernel']}/{l['stride']} {l['c_in']}->{l['c_out']} @{l['hw']}"
        lines.append(f"{l['name']:<21} {shape:<21} {count[key] if distinct else 1:>2} {r['config']:<16} {r['tiles']:>5} "
                     f"{r['waves']:>5} {r['wave_efficiency']:>5.2f} {r['bound']:<7} {r['roofline_s'] * 1e6:>7.1f} "
                     f"{r['predicted_s'] * 1e6:>7.1f}")
    return "\n".join(lines)


def totals(records: list[dict]) -> dict[tuple[str, str], dict]:
    """Per (device, dtype): layers, summed roofline and predicted seconds, their ratio, the
    FLOP-weighted mean wave efficiency and the number of memory-bound layers."""
    out: dict[tuple[str, str], dict] = {}
    for r in records:
        t = out.setdefault((r["device"], r["dtype"]), dict(layers=0, roofline_s=0.0, predicted_s=0.0, flops=0,
                                                           weighted_eff=0.0, memory_bound=0))
        t["layers"] += 1
        t["roofline_s"] += r["roofline_s"]
        t["predicted_s"] += r["predicted_s"]
        t["flops"] += r["flops"]
        t["weighted_eff"] += r["flops"] * r["wave_efficiency"]
        t["memory_bound"] += r["bound"] == "memory"
    for t in out.values():
        t["ratio"] = t["predicted_s"] / t["roofline_s"]
        t["wave_efficiency"] = t.pop("weighted_eff") / t["flops"]
    return out


def plot_wave_efficiency(records: list[dict], device: str = "H100-SXM", dtypes=("bf16", "tf32"), ax=None):
    """Wave-quantization efficiency of every ResNet-50 conv in execution order, one line per dtype."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3))
    for dt, marker in zip(dtypes, "os^"):
        eff = [r["wave_efficiency"] for r in records if r["device"] == device and r["dtype"] == dt]
        ax.plot(range(1, len(eff) + 1), eff, marker=marker, ms=3, lw=1, label=dt)
    ax.set_xlabel("ResNet-50 convolution (execution order)")
    ax.set_ylabel("wave efficiency")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Tiles / (waves x concurrent programs) on {device} ({DEVICES[device]['sms']} SMs), batch 32")
    ax.legend(loc="lower left")
    return ax


# --------------------------------------------------------------------------------------
# Private helpers
# --------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _resnet50_shapes() -> tuple:
    """ResNet-50's conv shapes, traced once per process (a meta-device forward pass)."""
    from .models import resnet50_conv_shapes

    return tuple(resnet50_conv_shapes())


def _compile_batch(jobs: list[dict], source: str | os.PathLike | None = None) -> list[dict]:
    """Compile ``jobs`` in one fresh Python process.

    The process is needed: without CUDA, importing :mod:`convbook.triton_conv` puts Triton in
    interpreter mode (``TRITON_INTERPRET=1``), which turns Triton's own library functions
    into interpreter objects that the compiler rejects; the child runs with
    ``TRITON_INTERPRET=0`` and a fresh, temporary cache directory (nothing reused between
    calls), and its ``ptxas -v`` log is captured.
    """
    from .triton_conv import triton_missing_reason

    reason = triton_missing_reason()
    if reason is not None:
        raise RuntimeError(reason)
    import sys

    cache = tempfile.mkdtemp(prefix="convbook-triton-")
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_CACHE_DIR=cache, TRITON_DUMP_PTXAS_LOG="1",
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    try:
        proc = subprocess.run([sys.executable, "-c", _WORKER, str(source or pathlib.Path(__file__).with_name("triton_conv.py"))],
                              input=json.dumps([{**j, "ptr": _PTR[j["dtype"]], "cc": TARGETS[j["target"]]} for j in jobs]),
                              capture_output=True, text=True, env=env)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"compiling the Triton kernel failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout)


# The child of _compile_batch.  It imports Triton but neither torch nor convbook (importing
# torch takes seconds): it takes the kernel's text from triton_conv.py (the function
# ``implicit_gemm_conv2d`` inside ``_kernel``, so the compiled code is the code the library
# runs), writes it to a temporary module and compiles it once per job.
_WORKER = r"""
import ast, contextlib, importlib.util, io, json, os, sys, tempfile, textwrap
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.jit import JITFunction

assert os.environ.get("TRITON_INTERPRET") == "0"
src = open(sys.argv[1], encoding="utf-8").read()
outer = next(n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.FunctionDef) and n.name == "_kernel")
inner = next(n for n in outer.body if isinstance(n, ast.FunctionDef) and n.name == "implicit_gemm_conv2d")
text = "import triton.language as tl\n\n\n" + textwrap.dedent(ast.get_source_segment(src, inner, padded=True)) + "\n"
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "convbook_triton_kernel.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    spec = importlib.util.spec_from_file_location("convbook_triton_kernel", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    kernel = JITFunction(mod.implicit_gemm_conv2d)
    names = kernel.arg_names
    ints = names[4:names.index("CIN_G")]
    ones = ("sxw", "sww", "syw", "DIL_H", "DIL_W")  # what the launcher specializes for unit values
    results = []
    for job in json.loads(sys.stdin.read()):
        dtype, layer, cfg = job["dtype"], job["layer"], job["cfg"]
        sig = {n: job["ptr"] for n in names[:4]}
        sig.update({n: ("constexpr" if n in ones else "i32") for n in ints})
        const = {n: 1 for n in ones}
        const.update(CIN_G=layer["c_in"] // layer["groups"], COUT_G=layer["c_out"] // layer["groups"],
                     KH=layer["kernel"], KW=layer["kernel"], HAS_BIAS=False, FP64=dtype == "fp64", INT64_INDEX=False,
                     DOT_PRECISION="tf32" if dtype == "tf32" else "ieee",
                     BLOCK_M=cfg["block_m"], BLOCK_N=cfg["block_n"], BLOCK_K=cfg["block_k"])
        sig.update({n: "constexpr" for n in const})
        attrs = {(i,): [["tt.divisibility", 16]] for i in range(4)}  # 16-byte aligned pointers
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            cc = triton.compile(ASTSource(fn=kernel, signature=sig, constexprs=const, attrs=attrs),
                                target=GPUTarget("cuda", job["cc"], 32),
                                options=dict(num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
                                             enable_fp_fusion=True))  # Triton 3.9's launch default
        results.append(dict(ptx=cc.asm["ptx"], log=log.getvalue(), shared=int(cc.metadata.shared)))
sys.stdout.write(json.dumps(results))
"""
