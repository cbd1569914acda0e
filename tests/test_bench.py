"""Chapter 12: the benchmark harness (convbook.bench) — statistics, counts, files, schema, CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from convbook import bench
from convbook.__main__ import main
from convbook.bench import (Case, Prepared, conv_counts, load_result, load_results, median_iqr, module_counts, run_case,
                            run_suite, suite, time_callable, validate_result, write_result)
from tests.planting import Plant, planted_failure_test

FAST = {"min_run_time": 0.005, "warmup": 1}


@pytest.fixture(scope="module")
def tiny_result():
    """A real run of a tiny suite (two quick CPU cases and one skipped)."""
    return run_suite("depthwise", "cpu", "small", roofline=False, **FAST)


# --- statistics --------------------------------------------------------------------------------


def test_median_iqr_small_cases_by_hand():
    assert median_iqr([3.0]) == (3.0, 0.0)
    assert median_iqr([1.0, 2.0]) == (1.5, 0.5)  # q1 = 1.25, q3 = 1.75
    assert median_iqr([4.0, 1.0, 3.0, 2.0, 5.0]) == (3.0, 2.0)


@given(st.lists(st.floats(1e-6, 10.0, allow_nan=False), min_size=1, max_size=60))
def test_median_iqr_matches_numpy_percentile(xs):
    med, iqr = median_iqr(xs)
    q1, q2, q3 = np.percentile(xs, [25, 50, 75])
    assert med == pytest.approx(q2, rel=1e-12, abs=0)
    assert iqr == pytest.approx(q3 - q1, rel=1e-9, abs=1e-15)


def test_median_iqr_invalid():
    with pytest.raises(ValueError, match="at least one sample"):
        median_iqr([])
    with pytest.raises(ValueError, match="finite"):
        median_iqr([1.0, float("nan")])


# --- counts ------------------------------------------------------------------------------------


@settings(max_examples=25)
@given(c=st.integers(1, 4), g=st.sampled_from([1, 2]), k=st.integers(1, 3), s=st.integers(1, 2), p=st.integers(0, 1),
       hw=st.integers(3, 9), b=st.integers(1, 3))
def test_conv_counts_against_flop_counter(c, g, k, s, p, hw, b):
    from torch.utils.flop_counter import FlopCounterMode

    x, w = torch.empty(b, 2 * c, hw, hw, device="meta"), torch.empty(2 * g, 2 * c // g, k, k, device="meta")
    counter = FlopCounterMode(display=False)
    with counter:
        y = torch.nn.functional.conv2d(x, w, stride=s, padding=p, groups=g)
    flops, nbytes = conv_counts(x.shape, w.shape, s, p, 1, g, itemsize=4)
    assert flops == counter.get_total_flops()
    assert nbytes == 4 * (x.numel() + w.numel() + y.numel())


def test_module_counts_sums_layers_and_linear():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 10))
    flops, nbytes = module_counts(model, (2, 3, 4, 4))
    assert flops == 2 * (2 * 8 * 16 * 3 * 9) + 2 * 2 * 128 * 10
    conv_b = 4 * (2 * 3 * 16 + 8 * 27 + 2 * 8 * 16)
    bn_b = 4 * (2 * 128 + 16 + 2 * 128)  # 16 = weight and bias (buffers are not counted)
    relu_b = 4 * (2 * 256)
    flat_b = 4 * (2 * 256)
    lin_b = 4 * (2 * 128 + 1290 + 20)
    assert nbytes == conv_b + bn_b + relu_b + flat_b + lin_b
    assert next(model.parameters()).device.type == "cpu"  # the model itself is untouched


def test_conv_counts_invalid():
    with pytest.raises(ValueError, match="groups must divide"):
        conv_counts((1, 4, 8, 8), (6, 2, 3, 3), groups=3)
    with pytest.raises(ValueError, match="empty convolution output"):
        conv_counts((1, 1, 2, 2), (1, 1, 5, 5))


# --- suites and timing -----------------------------------------------------------------------------


def test_every_issue_suite_exists_at_both_sizes():
    expected = {"resnet50-layers", "algorithms", "grouped-constant-macs", "depthwise", "resnext-forms", "bn-fold",
                "channels-last", "precision", "whole-network"}
    assert expected <= set(bench.suite_names())
    for name in expected:
        for size in ("small", "full"):
            cases = suite(name, size)
            assert cases and len({c.name for c in cases}) == len(cases)
    with pytest.raises(ValueError, match="unknown suite"):
        suite("nope")
    with pytest.raises(ValueError, match="size must be"):
        suite("depthwise", "huge")


def test_resnet50_has_23_distinct_conv_shapes_and_grouped_block_macs_are_near_constant():
    shapes = {c.params["resnet50_layer"] for c in suite("resnet50-layers", "full")}
    assert len(shapes) == 23 and "7x7/2 3->64 @224" in shapes
    flops = [c.build("meta").flops for c in suite("grouped-constant-macs", "full")]
    assert max(flops) / min(flops) < 1.1  # ResNeXt Table 2 keeps the block's complexity about constant


def test_precision_suite_states_tf32_explicitly():
    cases = suite("precision")
    assert [c.settings.get("tf32") for c in cases] == [False, True, False]
    rec = run_case(cases[1], "cpu", **FAST)
    assert rec["status"] == "skipped" and "TF32" in rec["reason"]


def test_missing_implementation_is_skipped_with_reason():
    case = Case("needs nothing that exists", lambda d: None, requires=("convbook.no_such_module:fn",))
    rec = run_case(case, "cpu")
    assert rec["status"] == "skipped" and "convbook.no_such_module is not available" in rec["reason"]
    case = Case("attr missing", lambda d: None, requires=("convbook.bench:no_such_fn",))
    assert "has no no_such_fn" in run_case(case, "cpu")["reason"]

    def unsupported(device):
        raise NotImplementedError("dilation")

    assert "not supported" in run_case(Case("ni", unsupported), "cpu")["reason"]


def test_time_callable_methods_on_cpu():
    calls = []
    samples, rec = time_callable(lambda: calls.append(1), method="events", warmup=2, min_run_time=0.001)
    assert len(samples) >= 10 and all(s > 0 for s in samples) and rec["timer"] == "time.perf_counter"
    assert len(calls) >= 2 + 1 + len(samples)  # warm-up, probe, timed
    samples, rec = time_callable(lambda: None, method="timer", min_run_time=0.005)
    assert samples and rec["timer"].endswith("blocked_autorange")
    samples, rec = time_callable(lambda: None, method="adaptive", min_run_time=0.005)
    assert samples and rec["timer"].endswith("adaptive_autorange")
    with pytest.raises(bench.Skip, match="CPU"):
        time_callable(lambda: None, method="do_bench")
    with pytest.raises(ValueError, match="method must be"):
        time_callable(lambda: None, method="stopwatch")
    with pytest.raises(ValueError, match="warmup"):
        time_callable(lambda: None, warmup=-1)


def test_run_suite_rejects_bad_device():
    with pytest.raises(ValueError, match="device must be"):
        run_suite("depthwise", "tpu")


def test_tiny_suite_end_to_end(tiny_result, tmp_path):
    data = validate_result(tiny_result)
    assert data["device"]["kind"] == "cpu" and data["settings"]["num_threads"] >= 1
    ok = [c for c in data["cases"] if c["status"] == "ok"]
    assert len(ok) == 3
    dense, dw = ok[0], ok[1]
    assert dense["flops"] == 2 * 64 * 64 * 9 * 14 * 14 and dw["flops"] == 2 * 64 * 9 * 14 * 14
    path = write_result(data, tmp_path)
    assert path.parent == tmp_path and path.name.startswith("cpu-") and path.name.endswith("-depthwise-small.json")
    loaded = load_result(path)
    assert loaded == json.loads(json.dumps(data))
    assert [p for p, _ in load_results(tmp_path)] == [path]
    text = bench.format_cases(loaded) + bench.format_provenance(loaded, path)
    assert "dense 3x3" in text and "torch" in text


# --- files ------------------------------------------------------------------------------------------


def test_no_overwrite_unless_forced(tiny_result, tmp_path):
    path = write_result(tiny_result, tmp_path)
    before = path.read_bytes()
    other = json.loads(json.dumps(tiny_result))
    other["command"] = "a different run"
    with pytest.raises(ValueError, match=f"{path.name} already exists"):
        write_result(other, tmp_path)
    assert path.read_bytes() == before
    write_result(other, tmp_path, force=True)
    assert load_result(path)["command"] == "a different run"
    assert sorted(os.listdir(tmp_path)) == [path.name]  # no temporary file left behind


def test_write_is_atomic_when_serialisation_fails(tiny_result, tmp_path, monkeypatch):
    path = write_result(tiny_result, tmp_path)
    before = path.read_bytes()

    def exploding_dump(*args, **kwargs):
        args[1].write('{"schema": "convbook.bench/1", "cases": [')  # half a file, then a crash
        raise RuntimeError("disk full")

    monkeypatch.setattr(bench.json, "dump", exploding_dump)
    with pytest.raises(RuntimeError, match="disk full"):
        write_result(tiny_result, tmp_path, force=True)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [path.name]


def test_bad_files_raise_value_error_naming_the_file(tiny_result, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        load_result(broken)
    with pytest.raises(ValueError, match="missing.json: cannot read"):
        load_result(tmp_path / "missing.json")
    for what, variant in bench._broken_variants(tiny_result):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(variant))
        with pytest.raises(ValueError, match="bad.json"):
            load_result(bad)
    with pytest.raises(ValueError, match="bad.json"):
        load_results(tmp_path)


def test_invalid_result_refused_before_writing(tiny_result, tmp_path):
    bad = json.loads(json.dumps(tiny_result))
    del bad["device"]
    with pytest.raises(ValueError, match="device"):
        write_result(bad, tmp_path)
    assert not list(tmp_path.iterdir())


def test_recorded_files_validate():
    results = load_results()
    assert results, "no recorded result under notebooks/data/bench"
    assert any(d["device"]["kind"] == "cpu" for _, d in results)


# --- CLI -----------------------------------------------------------------------------------------------


def test_cli_bench_writes_and_refuses_to_overwrite(tmp_path, capsys):
    args = ["bench", "--device", "cpu", "--suite", "precision", "--out", str(tmp_path), "--min-run-time", "0.005", "--warmup", "1"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "wrote" in out and "TF32" in out and "[" in err  # progress bar on stderr
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and load_result(files[0])["suite"] == "precision"
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0


def test_cli_bench_list_and_errors(capsys):
    assert main(["bench", "--list"]) == 0
    assert "grouped-constant-macs" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--suite", "no-such-suite"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert main(["bench", "--suite", "depthwise", "--device", "tpu"]) == 2
    assert "device must be" in capsys.readouterr().err
    assert main(["bench", "--suite", "depthwise", "--repeats", "0"]) == 2
    assert "--repeats must be >= 1" in capsys.readouterr().err


def test_cli_bench_without_suite_runs_every_suite_with_one_measured_roofline(tmp_path, monkeypatch, capsys):
    tiny = Case("one", lambda device: Prepared(lambda: torch.ones(4).sum(), 8, 16, "float32"))
    monkeypatch.setattr(bench, "SUITES", {"first": lambda size: [tiny], "second": lambda size: [tiny]})
    calls, real = [], bench.measure_cpu_roofline

    def fake_roofline(**kw):
        calls.append(1)
        return real(n=32, copy_bytes=2**16, repeats=2)

    monkeypatch.setattr(bench, "measure_cpu_roofline", fake_roofline)
    assert main(["bench", "--out", str(tmp_path), "--min-run-time", "0.001", "--warmup", "0", "--malloc", "system"]) == 0
    files = sorted(tmp_path.glob("*.json"))
    assert [load_result(f)["suite"] for f in files] == ["first", "second"] and calls == [1]
    roofs = [load_result(f)["roofline"] for f in files]
    assert roofs[0] == roofs[1] and load_result(files[0])["settings"]["allocator"] == "default"
    assert "suite 2/2: second" in capsys.readouterr().err


# --- planted failures ---------------------------------------------------------------------------------------

_ORIG_MEDIAN_IQR = bench.median_iqr
_ORIG_CONV_COUNTS = bench.conv_counts
_ORIG_VALIDATE = bench.validate_result


def _iqr_nearest_rank(samples):
    xs = sorted(samples)
    n = len(xs)
    return _ORIG_MEDIAN_IQR(samples)[0], xs[(3 * n) // 4] - xs[n // 4]  # nearest rank instead of interpolation


def _median_lower(samples):
    xs = sorted(samples)
    return xs[(len(xs) - 1) // 2], _ORIG_MEDIAN_IQR(samples)[1]  # lower median for even n


def _conv_counts_ignoring_groups(x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1, itemsize=4, bias=False):
    return _ORIG_CONV_COUNTS(x_shape, (w_shape[0], x_shape[1]) + tuple(w_shape[2:]), stride, padding, dilation, 1, itemsize, bias)


from convbook import cost as _cost  # noqa: E402

_ORIG_CONV_MACS = _cost.conv_macs


def _conv_macs_ignoring_groups(in_channels, out_channels, kernel_size, input_size, stride=1, padding=0, dilation=1,
                               groups=1, *args, **kwargs):
    return _ORIG_CONV_MACS(in_channels, out_channels, kernel_size, input_size, stride, padding,
                                                        dilation, 1, *args, **kwargs)


def _conv_counts_macs_not_flops(*args, **kwargs):
    f, q = _ORIG_CONV_COUNTS(*args, **kwargs)
    return f // 2, q


def _validate_schema_only(data, source="<result>"):
    import jsonschema

    try:
        jsonschema.validate(data, bench.RESULT_SCHEMA)
    except jsonschema.ValidationError as exc:
        raise ValueError(f"{source}: {exc.message}") from None
    return data  # forgets to check the medians against the samples


PLANTS = [
    Plant("bench.median-iqr", "nearest-rank quartiles", {"convbook.bench:median_iqr": _iqr_nearest_rank}),
    Plant("bench.median-iqr", "lower median", {"convbook.bench:median_iqr": _median_lower}),
    Plant("bench.flop-count", "groups ignored", {"convbook.bench:conv_counts": _conv_counts_ignoring_groups,
                                                 "convbook.cost:conv_macs": _conv_macs_ignoring_groups}),
    Plant("bench.flop-count", "MACs reported as FLOPs", {"convbook.bench:conv_counts": _conv_counts_macs_not_flops}),
    Plant("bench.schema", "validator accepts everything", {"convbook.bench:validate_result": lambda data, source="": data}),
    Plant("bench.schema", "medians not checked against samples", {"convbook.bench:validate_result": _validate_schema_only}),
]

test_planted_failure = planted_failure_test(PLANTS)


def test_case_label_names_the_shape_that_was_timed():
    from convbook.bench import case_label

    scaled = {"name": "conv1 7x7/2 3->64 @224", "params": {"c_in": 3, "c_out": 16, "kernel": 7, "stride": 2, "hw": 112,
                                                          "resnet50_layer": "7x7/2 3->64 @224"}}
    assert case_label(scaled) == "conv1 7x7/2 3->16 @112 [scaled from 7x7/2 3->64 @224]"
    full = {"name": "conv1 7x7/2 3->64 @224", "params": {"c_in": 3, "c_out": 64, "kernel": 7, "stride": 2, "hw": 224,
                                                        "resnet50_layer": "7x7/2 3->64 @224"}}
    assert case_label(full) == "conv1 7x7/2 3->64 @224"
    assert case_label({"name": "conv folded 16ch @28", "params": {"folded": True}}) == "conv folded 16ch @28"


def test_relative_rows_say_which_differences_exceed_the_spread():
    from convbook.bench import format_relative, relative_rows

    def case(name, folded, median, iqr):
        return {"name": name, "params": {"input": [1, 4, 8, 8], "folded": folded}, "status": "ok", "reason": None,
                "median_s": median, "iqr_s": iqr, "flops": 100}

    data = {"suite": "bn-fold", "cases": [case("a", False, 1.0, 0.01), case("b", True, 0.8, 0.01),
                                          case("c", False, 2.0, 0.5), case("d", True, 2.2, 0.5)]}
    data["cases"][2]["params"]["input"] = [1, 8, 8, 8]
    data["cases"][3]["params"]["input"] = [1, 8, 8, 8]
    rows = relative_rows(data)
    b, d = rows[1], rows[3]
    assert abs(b["spread"] - (0.01 / 0.8 + 0.01)) < 1e-12 and b["beyond_spread"] is True
    assert abs(d["spread"] - (0.5 / 2.2 + 0.25)) < 1e-12 and d["beyond_spread"] is False
    text = format_relative(data)
    assert "beyond spread" in text and text.splitlines()[2].rstrip().endswith("yes") and text.splitlines()[4].rstrip().endswith("no")


# --- interleaved comparisons and the measured roofline ----------------------------------------


def test_time_interleaved_alternates_the_order_and_pairs_the_samples():
    calls = []
    a, b, rec = bench.time_interleaved(lambda: calls.append("A"), lambda: calls.append("B"), warmup=1, repeats=4,
                                       min_sample_time=1e-9)
    assert len(a) == len(b) == 4 and all(v > 0 for v in a + b) and rec["number_per_sample"] == 1
    timed = calls[2 + 2:]  # after warm-up (A, B) and the two probes (A, B)
    assert timed == ["A", "B", "B", "A", "A", "B", "B", "A"]
    for bad in ({"repeats": 0}, {"warmup": -1}, {"min_sample_time": 0}):
        with pytest.raises(ValueError, match="need repeats"):
            bench.time_interleaved(lambda: None, lambda: None, **bad)


def _comparison_case():
    x = torch.randn(1, 2, 6, 6)
    w = torch.randn(2, 2, 3, 3)
    return Case("cmp", lambda device: Prepared(lambda: torch.nn.functional.conv2d(x, w, padding=1), 10, 10, "float32",
                                               reference=lambda: torch.nn.functional.conv2d(x, w, padding=1),
                                               reference_label="F.conv2d", extra={"note": 1}))


def test_comparison_record_validates_and_broken_ratios_are_refused():
    rec = run_case(_comparison_case(), "cpu", warmup=1, repeats=5, min_sample_time=1e-4)
    comp = rec["comparison"]
    assert comp["reference"] == "F.conv2d" and len(comp["ratios"]) == 5 and rec["extra"] == {"note": 1}
    assert all(r == pytest.approx(s / t, rel=1e-12) for r, s, t in zip(comp["ratios"], rec["samples_s"], comp["reference_samples_s"]))
    data = run_suite("depthwise", "cpu", "small", roofline=False, **FAST)
    data["cases"] = [rec]
    validate_result(data)
    bad = json.loads(json.dumps(data))
    bad["cases"][0]["comparison"]["ratios"][0] *= 2
    with pytest.raises(ValueError, match="is not sample / reference"):
        validate_result(bad)
    bad = json.loads(json.dumps(data))
    bad["cases"][0]["comparison"]["ratio_median"] *= 3
    with pytest.raises(ValueError, match="ratio median/IQR"):
        validate_result(bad)
    bad = json.loads(json.dumps(data))
    bad["cases"][0]["comparison"]["reference_samples_s"].pop()
    with pytest.raises(ValueError, match="one ratio per sample"):
        validate_result(bad)
    table = bench.format_comparisons(data)
    assert "cmp" in table and "× ref" in table
    summary = bench.comparison_summary(data)
    assert summary["cmp"]["cases"] == 1 and summary["cmp"]["median"] == comp["ratio_median"]


def test_measured_roofline_is_recorded_and_checked_against_its_samples():
    roof = bench.measure_cpu_roofline(n=64, copy_bytes=2**20, repeats=3)
    assert roof["peak_flops"] == pytest.approx(roof["gemm"]["flops"] / median_iqr(roof["gemm"]["samples_s"])[0])
    assert roof["bandwidth"] == pytest.approx(roof["copy"]["bytes"] / median_iqr(roof["copy"]["samples_s"])[0])
    data = run_suite("depthwise", "cpu", "small", roofline=roof, **FAST)
    assert validate_result(data)["roofline"] is roof and "roofline  measured" in bench.format_provenance(data)
    bad = json.loads(json.dumps(data))
    bad["roofline"]["peak_flops"] *= 2
    with pytest.raises(ValueError, match="does not follow from its samples"):
        validate_result(bad)
    assert "roofline" not in run_suite("depthwise", "cpu", "small", roofline=False, **FAST)
    with pytest.raises(ValueError, match="n must be >= 1"):
        bench.measure_cpu_roofline(n=0)


def test_fast_algorithm_suite_cases_compare_with_conv2d_on_the_same_tensors():
    cases = suite("fast-algorithms", "small")
    algos = {c.params["algorithm"] for c in cases}
    assert algos == {"im2col", "Winograd F(2,3)", "Winograd F(4,3)", "FFT"}
    assert sum(c.params["algorithm"] == "im2col" for c in cases) == len(bench._resnet50_shapes())
    full = {c.name: c.params for c in suite("fast-algorithms", "full")}
    assert full["FFT 11x11 64->64 @56 batch 8"]["batch"] == 8
    prepared = cases[1].build("cpu")  # a 1x1 layer: im2col against F.conv2d
    assert prepared.reference_label == "F.conv2d" and prepared.extra["float32_rel_error"] < 1e-5
    assert torch.allclose(prepared.fn(), prepared.reference(), atol=1e-4)


def _wino_case(m, ratio, model_m, layer=(64, 56)):
    c, hw = layer
    return {"name": f"W{m} {c}", "status": "ok", "params": {"algorithm": f"Winograd F({m},3)", "m": m, "kernel": 3,
                                                         "c_in": c, "c_out": c, "hw": hw},
            "comparison": {"ratio_median": ratio}, "extra": {"cost_model_tile": model_m}}


def test_winograd_tile_misses_names_layers_where_the_model_picks_the_slower_tile():
    data = {"cases": [_wino_case(2, 1.2, 4), _wino_case(4, 0.9, 4),                          # the model is right
                      _wino_case(2, 0.8, 4, (512, 7)), _wino_case(4, 1.1, 4, (512, 7)),      # it is wrong
                      {"name": "im2col", "status": "ok", "params": {"algorithm": "im2col"}}]}
    misses = bench.winograd_tile_misses(data)
    assert misses == [{"layer": "3x3 512->512 @7", "model_m": 4, "fastest_m": 2, "ratios": {2: 0.8, 4: 1.1}}]
