"""benchmarks/bench_contrast.py on the shipped demo bundle: both settings run on the same windows and the figures
printed are the gate's cost."""

import re


def test_prints_both_costs_and_their_ratio(benchmark_script, capsys):
    bench = benchmark_script("bench_contrast")
    assert bench.main(["--rounds", "1", "--queries", "3"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"5 queries with (\d+) opposites", out) and int(re.search(r"with (\d+) opposites", out)[1]) >= 5
    plain, gated, ratio = map(float, re.search(r"without the gate ([\d.]+) ms, with it ([\d.]+) ms \(x([\d.]+)\)",
                                               out).groups())
    assert plain > 0 and gated > 0 and abs(ratio - gated / plain) < 0.01
