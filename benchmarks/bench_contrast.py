"""What the monitor's contrast gate costs: encode + score time per window with and without it, side by side on the
demo stream, for the demo queries and --queries captions of random synthetic clips (as many as the alert benchmark
watches per stream; their opposites: `hbci.runtime.opposites`; the order check's half windows, encoded where an
ordered query would start, are counted in the gate's time). No torch.

    python benchmarks/bench_contrast.py [--bundle B] [--precision P] [--queries 20] [--rounds 3]

The two settings take turns, round by round, on the same file (every window, batches of 8), so slow drift of the
machine hits both; the ratio is what counts.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

import numpy as np

from hbci.runtime.bundle import load_bundle
from hbci.runtime.demo import BUNDLE_DIR, DEMO_QUERIES, demo_stream
from hbci.runtime.monitor import Monitor
from hbci.runtime.opposites import opposite_captions
from hbci.runtime.retriever import Retriever
from hbci.runtime.sources import open_source
from hbci.synth import caption, random_spec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=str(BUNDLE_DIR))
    ap.add_argument("--precision", help="default: fp32 if the bundle has it, else its first")
    ap.add_argument("--queries", type=int, default=20, help="random captions watched beside the demo queries")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    precisions = load_bundle(args.bundle, verify_hashes=False).precisions
    retriever = Retriever.load(args.bundle, precision=args.precision or ("fp32" if "fp32" in precisions
                                                                           else precisions[0]))
    rng = np.random.default_rng(0)
    queries = list(DEMO_QUERIES) + [caption(random_spec(rng), rng) for _ in range(args.queries)]
    opposites = sum(len(opposite_captions(q)) for q in queries)
    ms, checks = {False: [], True: []}, []
    with tempfile.TemporaryDirectory(prefix="hbci-bench-contrast-") as tmp:
        path, _ = demo_stream(tmp)
        for _ in range(args.rounds):
            for contrast in (False, True):
                monitor = Monitor(retriever, queries, contrast=contrast)
                with open_source("file", path) as source:
                    for _ in monitor.run(source):
                        pass
                ms[contrast].append(monitor.stats.summary()["encode_ms_per_window"])
                checks += [monitor.stats.order_checks] if contrast else []
    plain, gated = float(np.median(ms[False])), float(np.median(ms[True]))
    print(f"bundle {retriever.bundle_id}, {len(queries)} queries with {opposites} opposites, "
          f"{monitor.stats.windows} windows ({checks[-1]} order checks), {args.rounds} rounds (medians)")
    print(f"encode + score per window: without the gate {plain:.2f} ms, with it {gated:.2f} ms "
          f"(x{gated / plain:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
