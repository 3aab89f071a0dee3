"""Tests for hbci/bench: the machine description and compute peaks, FLOP counting, interleaved timing, relative
errors, fresh-process probes, and one `hbci-bench --quick` run that must write both files with every field
(figures are not checked: speed is measured by the benchmark, never asserted by a test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hbci.bench import SECTIONS
from hbci.bench.machine import cpu_facts, peak_ops
from hbci.bench.timing import interleaved

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _cpuinfo(vendor: str, flags: str, mhz: float = 2600.0, cpus: int = 2) -> str:
    block = f"vendor_id\t: {vendor}\nmodel name\t: Test CPU\ncpu MHz\t\t: {mhz}\nflags\t\t: {flags}\n\n"
    return block * cpus


@pytest.mark.parametrize("vendor, flags, int8, fp32", [
    ("AuthenticAMD", "avx2 fma avx512f avx512bw avx512_vnni", 128, 64),  # Zen 4: 512-bit VNNI at one per cycle
    ("GenuineIntel", "avx2 fma avx512f avx512bw avx512_vnni", 256, 64),
    ("GenuineIntel", "avx2 fma avx512f avx512bw avx512_vnni amx_tile amx_int8 amx_bf16", 2048, 64),
    ("GenuineIntel", "avx2 fma avx_vnni", 128, 32),
    ("GenuineIntel", "avx2 fma", 64, 32),
    ("GenuineIntel", "sse4_2", 16, 8),
])
def test_ops_per_cycle_follow_the_isa_flags(vendor, flags, int8, fp32):
    cpu = cpu_facts(_cpuinfo(vendor, flags), cores=2)
    assert cpu["ops_per_cycle"] == {"int8": int8, "fp32": fp32, "fp16": fp32}
    assert cpu["model"] == "Test CPU" and cpu["ghz"] == pytest.approx(2.6)
    assert peak_ops(cpu, "int8") == pytest.approx(2 * 2.6e9 * int8)
    assert cpu["isa"]["avx512_vnni"] == ("avx512_vnni" in flags) and not cpu["isa"]["avx512_fp16"]


def test_fp16_rate_doubles_only_with_avx512_fp16():
    cpu = cpu_facts(_cpuinfo("GenuineIntel", "avx2 fma avx512f avx512_fp16"), cores=4)
    assert cpu["ops_per_cycle"]["fp16"] == 2 * cpu["ops_per_cycle"]["fp32"] == 128


def test_no_cpuinfo_assumes_a_clock_and_says_so():
    cpu = cpu_facts("", cores=1)
    assert cpu["ghz"] == 2.0 and "assumed" in cpu["clock_from"]


def test_count_flops_on_a_hand_built_graph(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from hbci.bench.flops import count_flops

    w = numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
    g = numpy_helper.from_array(np.ones((5, 4), np.float32), "g")  # Gemm with transB: [2,4] x [5,4]^T
    k = numpy_helper.from_array(np.ones((6, 1, 3, 3), np.float32), "k")  # 6 output channels over a 1x8x8 image
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Gemm", ["y", "g"], ["z"], transB=1),
         helper.make_node("Conv", ["img", "k"], ["c"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("c", TensorProto.FLOAT, None)], [w, g, k])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / "g.onnx"
    onnx.save(model, str(path))
    flops = count_flops(path, {"x": np.ones((2, 3)), "img": np.ones((1, 1, 8, 8))})
    assert flops == {"MatMul": 2 * 2 * 4 * 3, "Gemm": 2 * 2 * 5 * 4, "Conv": 2 * (6 * 6 * 6) * 1 * 9}


def test_interleaved_runs_every_call_once_per_round_in_order():
    calls = []
    phases = [{"a": lambda: calls.append("a")}, {"b": lambda: calls.append("b"), "c": lambda: calls.append("c")}]
    times = interleaved(phases, rounds=3)
    assert calls == ["a", "b", "c"] + ["a", "b", "c"] * 3  # one warm-up each, then the rounds
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    with pytest.raises(ValueError):
        interleaved([{"a": print}, {"a": print}], 1)


def test_relative_errors_per_output():
    pytest.importorskip("torch")
    from hbci.bench.encoders import relative_errors

    reference = {"units": np.array([[1.0, -2.0], [0.5, 0.0]]), "pool": np.array([10.0, 20.0])}
    other = {"units": np.array([[1.1, -2.0], [0.5, 0.0]]), "pool": np.array([10.0, 21.0])}
    errors = relative_errors(reference, other)
    assert errors["units"]["max"] == pytest.approx(0.1 / 2.0) and errors["units"]["max_abs"] == pytest.approx(0.1)
    assert errors["pool"]["max"] == pytest.approx(1.0 / 20.0)
    assert errors["pool"]["norm"] == pytest.approx(1.0 / np.sqrt(500.0))


def test_import_probe_runs_in_a_fresh_process_without_torch():
    from hbci.bench.probe import measure

    result = measure({"task": "import"})
    assert result["heavy_modules_loaded"] == []
    assert 0 <= result["import_hbci_runtime_s"] < 30 and result["rss_mb"] > 0


def test_torch_free_sections_import_without_torch():
    modules = ["hbci.bench.runner", "hbci.bench.cli", "hbci.bench.live", "hbci.bench.footprint",
               "hbci.bench.threads", "hbci.bench.probe", "hbci.bench.machine"]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "bad = [m for m in ('torch', 'open_clip', 'onnx') if m in sys.modules]\n"
            "assert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 0, result.stderr


def test_unknown_section_is_a_usage_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "hbci.bench.cli", "--sections", "encoders,nope", "--out",
                             str(tmp_path)], capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 2 and "unknown section(s) nope" in result.stderr
    assert not (tmp_path / "BENCHMARKS.md").exists()


@pytest.mark.slow
def test_quick_run_writes_both_files_with_every_field(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "hbci.bench.cli", "--quick", "--out", str(out), "--work",
                             str(tmp_path / "work")], capture_output=True, text=True, env=ENV, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    data = json.loads((out / "benchmarks.json").read_text())
    markdown = (out / "BENCHMARKS.md").read_text()

    machine = data["machine"]
    assert machine["cpu"]["model"] and machine["cpu"]["cores"] >= 1 and machine["cpu"]["ghz"] > 0
    assert set(machine["cpu"]["isa"]) >= {"avx512_vnni", "avx_vnni", "amx_int8"}
    assert machine["packages"]["onnxruntime"] and machine["packages"]["numpy"] and "gpus" in machine
    assert len(machine["load_average"]) == 3 and data["quick"] is True
    assert list(data["sections"]) == list(SECTIONS)
    assert not [n for n, s in data["sections"].items() if "error" in s or "skipped" in s]

    size = data["sections"]["encoders"]["sizes"]["small"]
    video = {r["row"]: r for r in size["graphs"]["video_encoder"]["rows"]}
    assert set(video) == {"torch eager fp32", "onnxruntime fp32", "onnxruntime fp16", "onnxruntime int8",
                          "tensorrt"}
    for row in (video["onnxruntime fp32"], video["onnxruntime int8"]):
        assert {"per_s", "x_torch", "floor_per_s", "x_floor", "ms_before", "before_over_now"} <= set(row)
        assert row["memory"]["peak_rss_mb"] > row["memory"]["baseline_rss_mb"] > 0
    if machine["gpus"] == []:
        assert "skipped" in video["tensorrt"]
    text = {r["row"] for r in size["graphs"]["text_encoder"]["rows"]}
    assert "onnxruntime int8" in text  # INT8 quantizes both encoders (the text encoder for memory)
    assert set(size["golden_relative_error"]["int8"]["video_encoder"]) >= {"video_global", "pool_values"}
    assert set(size["golden_relative_error"]["int8"]["text_encoder"]) >= {"text_global", "word_units"}

    scorer = data["sections"]["scorer"]["sizes"]["small"]
    assert {"runtime", "runtime_before", "torch_all_pairs"} == set(scorer["rows"])
    assert scorer["max_abs_difference"] < 1e-3  # chunked scores are the scores
    live = data["sections"]["live"]["settings"]
    assert set(live) == {"now", "before"} and live["now"]["offline"]["windows"] > 0
    footprint = data["sections"]["footprint"]
    assert footprint["heavy_modules_loaded"] == [] and footprint["imports"]["import_hbci_runtime_s"] >= 0
    assert all(b["peak_rss_mb"] > 0 for b in footprint["bundles"].values())
    threads = data["sections"]["threads"]["bundles"]
    assert all(set(b["ms_per_window"]) == {"spin-off", "spin-on", "shared"} for b in threads.values())
    assert set(data["summary"]) >= {"small_int8_video", "spinning_off_over_on", "import_hbci_runtime_s", "peak_rss_mb"}

    for heading in ("# Benchmarks", "## Machine", "## Summary", "## Encoders", "## Scorer", "## Live monitoring",
                    "## Runtime footprint", "## Threads", "load average"):
        assert heading in markdown
