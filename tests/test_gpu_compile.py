"""Chapter 12: the Triton kernel compiled for sm_90 and sm_80 without a GPU (convbook.gpu_compile),
occupancy and waves derived from the compile, and the recorded predictions.

The compiles run in one child process (Triton's cache in a fresh temporary directory, so
nothing from an earlier run can hide a failure), on small tiles to keep the time down."""

from __future__ import annotations

import json
import math
import re

import pytest

from convbook import gpu_compile as gc
from convbook.triton_conv import CONFIGS, MODES, triton_missing_reason

REASON = triton_missing_reason()
needs_triton = pytest.mark.skipif(REASON is not None, reason=REASON or "")

TINY = dict(block_m=64, block_n=16, block_k=16, num_warps=4, num_stages=1, layer=dict(c_in=16, c_out=16, kernel=1))
RECORDED = ("sm_90", "bf16", "64x64x32/4w/3s")  # one configuration of compiled.json, compiled afresh


@pytest.fixture(scope="module")
def fresh():
    """{(target, dtype): report} for the tiny tile, and the fresh report of RECORDED, in one child process."""
    jobs = [dict(target=t, dtype=d, **TINY) for t in gc.TARGETS for d in MODES]
    rec = next(r for r in gc.load_json("compiled.json")["records"] if (r["target"], r["dtype"], r["config"]) == RECORDED)
    jobs.append(dict(target=rec["target"], dtype=rec["dtype"], block_m=rec["block_m"], block_n=rec["block_n"],
                     block_k=rec["block_k"], num_warps=rec["num_warps"], num_stages=rec["num_stages"]))
    reports = gc.compile_reports(jobs, ptx=True)
    return {(r.target, r.dtype): (r, ptx) for r, ptx in reports[:-1]}, reports[-1][0], rec


@needs_triton
@pytest.mark.parametrize("target", sorted(gc.TARGETS))
@pytest.mark.parametrize("dtype", MODES)
def test_compiles_for_both_targets_in_every_dtype(fresh, target, dtype):
    rep, ptx = fresh[0][(target, dtype)]
    if dtype == "tf32":  # float32 bits reach the tensor core unrounded: TF32 by truncation (UNIT_ROUNDOFF)
        assert not re.search(r"cvt\.\w+\.tf32", ptx)
    assert rep.registers > 0 and rep.shared_bytes > 0 and rep.fits_shared and rep.blocks_per_sm >= 1
    tensor_core = dtype in ("bf16", "fp16", "tf32")
    if tensor_core and target == "sm_90":
        assert rep.wgmma > 0 and rep.fma == 0, rep      # Hopper's warpgroup MMA
    elif tensor_core:
        assert rep.mma > 0 and rep.wgmma == 0 and rep.fma == 0, rep  # Ampere's mma.sync
    elif dtype == "fp32-ieee":
        assert rep.wgmma == rep.mma == 0 and rep.fma > 0, rep  # no tensor core: IEEE float32 FMAs
    else:
        assert rep.wgmma == 0 and rep.mma > 0 and rep.fma == 0, rep  # float64 MMA (DMMA) on both


@needs_triton
def test_compiled_json_agrees_with_a_fresh_compile(fresh):
    _, rep, rec = fresh
    new = {**rep.as_record(), "config": rec["config"]}
    assert new == rec


def test_compiled_json_schema_and_coverage():
    data = gc.load_json("compiled.json")
    keys = {(r["target"], r["dtype"], r["config"]) for r in data["records"]}
    want = {(t, d, c.name) for t in gc.TARGETS for d in MODES for c in CONFIGS[d]}
    assert keys == want and len(data["records"]) == len(want)
    for r in data["records"]:
        assert r["blocks_per_sm"] == gc.blocks_per_sm(r["target"], r["registers"], r["shared_bytes"], r["num_warps"])
        tensor_core = r["dtype"] in ("bf16", "fp16", "tf32")
        assert (r["wgmma"] > 0) == (tensor_core and r["target"] == "sm_90"), r
        assert r["fma"] == 0 or r["dtype"] == "fp32-ieee", r
    assert "checked on hardware only once a GPU" in data["note"]


def test_predictions_cover_every_resnet50_conv_layer():
    data = gc.load_json("predictions.json")
    layers = gc.resnet50_layers()
    assert len(layers) == 53
    want = {(l["name"], dev, dt) for l in layers for dev in ("H100-SXM", "H200") for dt in ("bf16", "tf32")}
    got = [(r["layer"]["name"], r["device"], r["dtype"]) for r in data["records"]]
    assert set(got) == want and len(got) == len(want)
    compiled = {(r["target"], r["dtype"], r["config"]): r for r in gc.load_json("compiled.json")["records"]}
    for r in data["records"]:
        c = compiled[(r["target"], r["dtype"], r["config"])]
        assert r["blocks_per_sm"] == c["blocks_per_sm"]
        assert r["predicted_s"] >= r["roofline_s"]
        assert 0 < r["wave_efficiency"] <= 1
    assert "checked on hardware only once a GPU" in data["note"]
    assert all(dev["source"] for dev in data["devices"].values())


def test_predictions_file_is_what_the_generator_computes():
    """The recorded predictions are the functions' output on the recorded compile reports
    (nothing typed in); JSON round-trips floats exactly."""
    compiled = gc.load_json("compiled.json")["records"]
    assert gc.load_json("predictions.json")["records"] == json.loads(json.dumps(gc.predictions(compiled)))


def test_validate_predictions_catches_a_wrong_roofline():
    data = gc.load_json("predictions.json")
    data["records"][0]["roofline_s"] *= 1.01
    with pytest.raises(ValueError, match="roofline_s"):
        gc.validate_predictions(data)
    data = gc.load_json("predictions.json")
    data["records"][3]["predicted_s"] = data["records"][3]["roofline_s"] / 2
    with pytest.raises(ValueError, match="below the roofline"):
        gc.validate_predictions(data)
    data = gc.load_json("predictions.json")
    del data["records"][5]["bytes"]
    with pytest.raises(ValueError, match="missing fields"):
        gc.validate_predictions(data)


def test_generator_refuses_to_overwrite_predictions_after_a_measurement(tmp_path):
    compiled = gc.load_json("compiled.json")["records"]
    recs = gc.predictions(compiled)[:4]
    gpu, bench = tmp_path / "gpu", tmp_path / "bench"
    bench.mkdir()
    path = gc.write_predictions(recs, gpu / "predictions.json", bench_dir=bench)
    gc.write_predictions(recs, path, bench_dir=bench)  # no measurement yet: rewriting is allowed
    (bench / "cpu-x.json").write_text(json.dumps({"device": {"kind": "cpu"}}))
    gc.write_predictions(recs, path, bench_dir=bench)  # a CPU result is not a GPU measurement
    (bench / "cuda-h100-resnet50-layers-full.json").write_text(json.dumps({"device": {"kind": "cuda"}}))
    with pytest.raises(RuntimeError, match="refusing to overwrite.*never edited after a measurement"):
        gc.write_predictions(recs, path, bench_dir=bench)
    (bench / "cuda-h100-resnet50-layers-full.json").unlink()
    (gpu / "measured-h100.json").write_text("{}")
    with pytest.raises(RuntimeError, match="refusing to overwrite"):
        gc.write_predictions(recs, path, bench_dir=bench)


# --- occupancy and waves, by hand -------------------------------------------------------


def test_occupancy_by_hand():
    # 254 registers: 254·32 = 8128 -> 8192 per warp; 65536 / 8192 = 8 warps -> one 8-warp block
    occ = gc.occupancy("sm_90", 254, 65536, 8)
    assert (occ["blocks_per_sm"], occ["limiter"], occ["occupancy"]) == (1, "registers", 8 / 64)
    # 96 registers, 4 warps: 3072 per warp, 21 warps -> 20 (multiple of 4) -> 5 blocks; shared
    # (40960 + 1024) -> 41984 bytes: 233472 // 41984 = 5 on sm_90, 167936 // 41984 = 4 on sm_80
    assert gc.occupancy("sm_90", 96, 40960, 4)["by"] == {"registers": 5, "shared memory": 5, "warps": 16, "blocks": 32}
    occ80 = gc.occupancy("sm_80", 96, 40960, 4)
    assert (occ80["blocks_per_sm"], occ80["limiter"]) == (4, "shared memory")
    # 32 registers, 1 warp, no shared memory: the 32-block limit binds
    assert gc.occupancy("sm_80", 32, 0, 1)["limiter"] == "blocks"
    # more shared memory than a block may have: cannot launch
    assert gc.occupancy("sm_80", 64, 170 * 1024, 4)["blocks_per_sm"] == 0
    assert gc.occupancy("sm_90", 64, 170 * 1024, 4)["blocks_per_sm"] == 1
    with pytest.raises(ValueError, match="registers per thread"):
        gc.occupancy("sm_90", 256, 0, 4)


def test_waves_by_hand():
    assert gc.waves(264, 132, 1) == {"tiles": 264, "concurrent": 132, "waves": 2, "efficiency": 1.0}
    w = gc.waves(133, 132, 1)
    assert w["waves"] == 2 and w["efficiency"] == 133 / 264
    assert gc.waves(10, 132, 2)["efficiency"] == 10 / 264
    assert gc.tile_count(32 * 56 * 56, 64, 1, 128, 64) == 784
    with pytest.raises(ValueError):
        gc.waves(0, 132, 1)


def test_spills_and_shared_limit_reported():
    log = "ptxas info    : Used 255 registers, 136 bytes stack frame, 136 bytes spill stores, 140 bytes spill loads"
    assert gc.parse_ptxas_log(log) == {"registers": 255, "stack_bytes": 136, "spill_bytes": 136, "spill_load_bytes": 140}
    with pytest.raises(RuntimeError, match="not understood"):
        gc.parse_ptxas_log("nothing")
    rep = gc.CompileReport("sm_80", "fp32-ieee", 64, 64, 32, 4, 2, 255, 136, 136, 16384, 0, 0, 1024, 0, 24, 2, "registers", True)
    assert rep.spills and rep.as_record()["spills"]


def test_count_instructions():
    ptx = "\twgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {...};\n\tmma.sync.aligned.m16n8k16.row.col.f32.bf16\n" \
          "\tfma.rn.f32 %f1, %f2, %f3, %f4;\n\tfma.rn.f64 %fd1, %fd2, %fd3, %fd4;\n// wgmma.mma_async in a comment\n" \
          "\tcp.async.cg.shared.global [ %r1 + 0 ], [ %rd1 + 0 ], 0x10, %r2;\n\t@%p7 ld.global.b16 { %rs1 }, [ %rd2 + 0 ];\n"
    assert gc.count_instructions(ptx) == {"wgmma": 1, "mma": 1, "fma": 2, "cp_async": 1, "ld_global": 1}


def test_compile_report_rejects_unknown_names():
    with pytest.raises(ValueError, match="target must be one of"):
        gc.compile_report("sm_70")
    with pytest.raises(ValueError, match="dtype must be one of"):
        gc.compile_report("sm_90", "int8")


def test_predict_layer_by_hand():
    """conv2_x 3x3 at batch 32 in bf16 on an H100: F = 2·32·56²·64·64·9, Q = 2·(x + w + y)."""
    layer = next(l for l in gc.resnet50_layers() if l["name"] == "layer1.0.conv2")
    assert (layer["c_in"], layer["c_out"], layer["kernel"], layer["hw"], layer["hw_out"]) == (64, 64, 3, 56, 56)
    cfg = "128x64x32/4w/3s"
    r = gc.predict_layer(layer, "H100-SXM", "bf16", {("sm_90", "bf16", cfg): 2})
    f = 2 * 32 * 56 * 56 * 64 * 64 * 9
    q = 2 * (32 * 64 * 56 * 56 * 2 + 64 * 64 * 9)
    assert (r["flops"], r["bytes"], r["config"], r["tiles"]) == (f, q, cfg, 784)
    assert r["roofline_s"] == max(f / 989.4e12, q / 3.35e12)
    # 784 tiles over 132·2 = 264 slots: 3 waves, 784/792 busy
    assert (r["waves"], r["wave_efficiency"]) == (3, 784 / 792)
    assert math.isclose(r["predicted_s"], max(f / (989.4e12 * gc.KERNEL_EFFICIENCY * 784 / 792), q / 3.35e12))


def test_compiled_instruction_counts_follow_from_the_tile():
    """Every recorded compile has exactly the tensor-core / FMA instructions the tile and the
    instruction shapes predict (convbook.gpu_compile.instruction_formula), and the 16-bit
    modes gather with one scalar load per element."""
    for r in gc.load_json("compiled.json")["records"]:
        want = gc.instruction_formula(r["target"], r["dtype"], r["block_m"], r["block_n"], r["block_k"], r["num_warps"])
        assert {k: r[k] for k in want} == want, (r["target"], r["dtype"], r["config"])


def test_formula_mismatches_flags_a_record_that_disagrees():
    from convbook import gpu_compile as gc

    records = gc.load_json("compiled.json")["records"]
    assert gc.formula_mismatches(records) == []
    bad = dict(records[0])
    key = next(k for k in ("wgmma", "mma", "fma") if k in bad)
    bad[key] += 1
    assert gc.formula_mismatches([bad]) == [bad]
