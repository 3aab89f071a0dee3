"""benchmarks/bench_train_step.py: two configs' optimiser steps, interleaved, and the ratio of their medians."""

import json

import pytest

pytest.importorskip("torch", reason="the benchmark trains the torch model")

TINY = ["model.num_frames=4", "model.max_words=16", "model.temporal_layers=1", "model.num_segments=2",
        "model.num_phrases=2", "model.concepts=4", "train.batch_size=8"]


def test_two_configs_step_in_turn_and_their_ratio_is_reported(tmp_path, benchmark_script, capsys):
    from hbci.config import ConfigError
    from hbci.synth import generate

    bench = benchmark_script("bench_train_step")
    data = tmp_path / "synth"
    generate(data, seed=2, n_train=24, n_val=0, n_test=0, frames=8, size=32)
    out = tmp_path / "step.json"
    args = ["small", f"data.root={data}", "data.val_split=", "data.test_split=", "data.heldout_split=", *TINY,
            "model.partial_window_negatives=false", "--option", "model.partial_window_negatives=true",
            "--steps", "2", "--warmup", "1", "--clips", "16", "--json", str(out)]
    assert bench.main(args) == 0
    result = json.loads(out.read_text())
    assert result["steps"] == 2 and result["batch"] == 8
    assert result["a_seconds"] > 0 and result["b_seconds"] > 0
    assert result["ratio"] == pytest.approx(result["b_seconds"] / result["a_seconds"], rel=0.01)
    assert "B/A" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="no_such_option"):
        bench.main([*args[:-2], "--option", "model.no_such_option=1"])


def test_plain_matmul_baseline_runs_the_same_config_with_torch_matmul(tmp_path, benchmark_script, capsys,
                                                                     monkeypatch):
    import hbci.model
    from hbci.synth import generate

    bench = benchmark_script("bench_train_step")
    data = tmp_path / "synth"
    generate(data, seed=2, n_train=24, n_val=0, n_test=0, frames=8, size=32)
    calls = []
    product = hbci.model.broadcast_matmul
    monkeypatch.setattr(hbci.model, "broadcast_matmul", lambda a, b: calls.append(1) or product(a, b))
    args = ["small", f"data.root={data}", "data.val_split=", "data.test_split=", "data.heldout_split=", *TINY,
            "--steps", "2", "--warmup", "1", "--clips", "16", "--json", str(tmp_path / "step.json")]
    assert bench.main([*args, "--plain-matmul"]) == 0
    result = json.loads((tmp_path / "step.json").read_text())
    assert result["a_plain_matmul"] is True and result["option"] == []
    assert "plain matmul" in capsys.readouterr().out
    per_run = len(calls)  # only run B went through the product code: run A's steps had torch.matmul patched in
    assert per_run > 0
    calls.clear()
    assert bench.main([*args, "--option", "train.lr=0.001"]) == 0
    assert len(calls) == 2 * per_run  # without the flag both runs use it
    with pytest.raises(SystemExit):
        bench.main(args)  # neither an option nor the baseline: nothing to compare
