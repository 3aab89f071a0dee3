"""benchmarks/bench_alerts.py: every hard-negative query of a stream is filed under what it changes, and the
per-variant false-alert counts add up to the hard-negative total."""

from types import SimpleNamespace

import numpy as np

from hbci.synth import VARIANT_CLASSES



def test_hard_negatives_are_filed_by_variant_and_counted(tmp_path, benchmark_script):
    bench = benchmark_script("bench_alerts")
    path, known, queries, variant_of = bench.stream_case(tmp_path, seed=5, index=0, clips=4, fps=8.0, size=32)
    hard = [q for q, kind in queries if kind == "hard_negative"]
    assert hard and sorted(variant_of) == sorted(hard)
    assert set(variant_of.values()) <= set(VARIANT_CLASSES)

    # Every window scores 1.0 for every query: each query alerts once over the whole stream.
    windows = [(i * 0.5, i * 0.5 + 3.0) for i in range(int(known[-1]["end_s"]) * 2)]
    case = {"path": path, "known": known, "queries": queries, "variant_of": variant_of, "spans": windows,
            "scores": np.ones((len(queries), len(windows)), np.float32)}
    bundle = SimpleNamespace(thresholds=None)
    retriever = SimpleNamespace(bundle=bundle, bundle_id="test")
    result = bench.evaluate(retriever, [case], 3.0, 0.5, 0.0, 0.5, 0.4)
    by_variant = result["hard_negatives_by_variant"]
    assert sum(v["queries"] for v in by_variant.values()) == len(hard)
    assert sum(v["fp"] for v in by_variant.values()) == result["by_kind"]["hard_negative"]["fp"] == len(hard)
