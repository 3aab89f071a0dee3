"""Tests for runtime/backends.py's session factory: the thread settings every ONNX Runtime session gets, that the
retriever's sessions have them, and that no other module creates sessions by itself."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from hbci.runtime.backends import OrtBackend, create_session, session_options
from hbci.runtime.bundle import load_bundle
from hbci.runtime.errors import BundleError, ConfigError
from hbci.runtime.retriever import Retriever

ROOT = Path(__file__).resolve().parents[2]
SPIN = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


def test_spinning_is_off_by_default():
    options = session_options()
    assert [options.get_session_config_entry(k) for k in SPIN] == ["0", "0"]
    assert options.intra_op_num_threads == 0  # one per core
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.use_per_session_threads


@pytest.mark.parametrize("optimization, level", [("basic", ort.GraphOptimizationLevel.ORT_ENABLE_BASIC),
                                                 ("none", ort.GraphOptimizationLevel.ORT_DISABLE_ALL)])
def test_threads_spinning_and_optimization_are_honoured(optimization, level):
    options = session_options(threads=1, optimization=optimization, spinning=True)
    assert [options.get_session_config_entry(k) for k in SPIN] == ["1", "1"]
    assert options.intra_op_num_threads == 1 and options.graph_optimization_level == level


@pytest.mark.parametrize("kwargs", [{"threads": -1}, {"threads": 1.5}, {"threads": True}, {"optimization": "max"}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ConfigError):
        session_options(**kwargs)


@pytest.fixture(scope="module")
def retriever(runtime_bundle) -> Retriever:
    precision = load_bundle(runtime_bundle).precisions[0]
    return Retriever.load(runtime_bundle, backend="onnxruntime-cpu", precision=precision, threads=1)


def test_the_retriever_sessions_come_from_the_factory(retriever):
    for graph, backend in retriever.backends.items():
        options = backend.session.get_session_options()
        assert [options.get_session_config_entry(k) for k in SPIN] == ["0", "0"], graph
        assert options.intra_op_num_threads == 1, graph


def test_reopened_changes_one_setting_and_computes_the_same(retriever):
    backend = retriever.backends["text_encoder"]
    spinning = backend.reopened(spinning=True)
    options = spinning.session.get_session_options()
    assert options.get_session_config_entry(SPIN[0]) == "1" and options.intra_op_num_threads == 1
    ids, mask = retriever.tokenizer(["a red circle moves left", "a person cooks"])
    feeds = {"token_ids": ids, "token_mask": mask.astype(np.float32)}
    for name, value in backend.run(feeds).items():
        np.testing.assert_array_equal(spinning.run(feeds)[name], value)
    with pytest.raises(ConfigError, match="path"):
        backend.reopened(path="elsewhere.onnx")


def test_an_unloadable_graph_is_named(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(BundleError, match="broken.onnx: onnxruntime could not load"):
        OrtBackend(bad, ["CPUExecutionProvider"])
    with pytest.raises(BundleError, match="graph bytes"):
        create_session(b"not a graph", ["CPUExecutionProvider"])


def test_shared_thread_pool_in_a_fresh_process(runtime_bundle):
    code = (
        "import numpy as np\n"
        "from hbci.runtime.backends import use_shared_thread_pool\n"
        "from hbci.runtime.bundle import load_bundle\n"
        "from hbci.runtime.retriever import Retriever\n"
        "use_shared_thread_pool(2)\n"
        f"bundle = {str(runtime_bundle)!r}\n"
        "r = Retriever.load(bundle, backend='onnxruntime-cpu', precision=load_bundle(bundle).precisions[0])\n"
        "assert all(not b.session.get_session_options().use_per_session_threads for b in r.backends.values())\n"
        "frames = np.zeros((1, r.bundle.num_frames, 40, 40, 3), np.uint8)\n"
        "print(r.score(r.encode_text(['a red circle']), r.encode_video(frames)).shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "(1, 1)"


def test_no_other_module_creates_onnxruntime_sessions():
    folders = ("hbci", "export", "calibration", "runtime", "benchmarks", "scripts")
    pattern = re.compile(r"\b(InferenceSession|SessionOptions)\(")
    offenders = [str(path.relative_to(ROOT)) for folder in folders for path in (ROOT / folder).rglob("*.py")
                 if path != ROOT / "runtime" / "backends.py" and pattern.search(path.read_text(encoding="utf-8"))]
    assert offenders == [], "create sessions with hbci.runtime.backends.create_session (or OrtBackend)"
