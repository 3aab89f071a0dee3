"""What a training option costs: optimiser steps of two configs side by side, interleaved on the same windows.

    python benchmarks/bench_train_step.py small data.root=data/synth model.pretrained=data/synth/backbone.pt \
        --option model.partial_window_negatives=false --steps 20

    python benchmarks/bench_train_step.py small data.root=data/synth model.pretrained=data/synth/backbone.pt \
        --plain-matmul --steps 20

Run A is the config as given, run B the config with `--option` overrides on top (with `--plain-matmul` alone,
run A scores its pairs with plain torch.matmul, as the code did before `hbci.layers.broadcast_matmul`, and run B
is the same config with the product code). Both start from the same weights
and take their steps in turn (A, B, A, B, ...) on the same batches, so a noisy shared machine slows both alike;
the figure that counts is the ratio of their median step times. The first `--warmup` steps of each are not
counted. Needs torch and the training data (only `--clips` training items are decoded).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time

import numpy as np


def step_times(config_a, config_b, steps: int, warmup: int, clips: int, log=print,
               a_context=contextlib.nullcontext) -> dict:
    """Median seconds per optimiser step of each config, and B's over A's; run A's steps run inside
    `a_context()`."""
    from hbci.data import load_pool
    from hbci.distributed import init_distributed
    from hbci.train import _build_model, _start_run, _train_step

    dist = init_distributed(config_a.train.device)
    runs = []
    for config in (config_a, config_b):
        model = _build_model(config, dist)
        runs.append(_start_run(config, dist, model, clips))
    pool = load_pool(config_a.data, config_a.data.train_split, runs[0].model.image_size, clips, progress=False)
    captions = [list(item.captions) for item in pool.items]
    batch = config_a.train.batch_size
    rng = np.random.default_rng(0)
    times = ([], [])
    for step in range(warmup + steps):
        index = rng.choice(len(pool), size=min(batch, len(pool)), replace=False)
        picks = rng.integers(0, 3, size=len(pool))
        for which, run in enumerate(runs):
            with a_context() if which == 0 else contextlib.nullcontext():
                start = time.perf_counter()
                _train_step(run, pool, captions, index, picks, window_seed=step)
                elapsed = time.perf_counter() - start
            if step >= warmup:
                times[which].append(elapsed)
        if step == warmup - 1:
            log(f"warm-up done ({warmup} steps each)")
    a, b = (float(np.median(t)) for t in times)
    return {"steps": steps, "batch": batch, "a_seconds": round(a, 4), "b_seconds": round(b, 4),
            "ratio": round(b / a, 3)}


def _plain_matmul():
    """The model's products as torch.matmul, for a side-by-side baseline."""
    from unittest import mock

    return mock.patch("hbci.model.broadcast_matmul", lambda a, b: a @ b)


def main(argv: list[str] | None = None) -> int:
    from hbci.config import apply_overrides, load_config

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="a config name or path, as hbci-train takes")
    ap.add_argument("overrides", nargs="*", help="section.key=value for both runs")
    ap.add_argument("--option", action="append", default=[], help="section.key=value for run B only")
    ap.add_argument("--plain-matmul", action="store_true",
                    help="run A multiplies with torch.matmul, copying broadcast operands (the code before)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--clips", type=int, default=512, help="training items decoded (the batches come from these)")
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args(argv)
    if not args.option and not args.plain_matmul:
        ap.error("give --option (and/or --plain-matmul): otherwise the two runs are the same")
    with tempfile.TemporaryDirectory() as out:
        base = [*args.overrides, f"train.out_dir={out}"]
        config_a = apply_overrides(load_config(args.config), base)
        config_b = apply_overrides(load_config(args.config), [*base, *args.option])
        a_context = _plain_matmul if args.plain_matmul else contextlib.nullcontext
        result = step_times(config_a, config_b, args.steps, args.warmup, args.clips,
                            log=lambda m: print(m, file=sys.stderr), a_context=a_context)
    result["option"] = args.option
    result["a_plain_matmul"] = args.plain_matmul
    b_name = " ".join(args.option) or "the same config"
    a_name = "A, plain matmul," if args.plain_matmul else "A"
    print(f"{a_name} {result['a_seconds']:.3f} s/step, B ({b_name}) {result['b_seconds']:.3f} s/step: "
          f"B/A {result['ratio']:.3f} (median of {args.steps} interleaved steps of batch {result['batch']})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
