"""Live monitoring throughput and latency of any bundle (default: the shipped demo bundle), as JSON.

    python benchmarks/bench_live.py [--bundle B] [--precision P] [--fps 30] [--size 480] [--skip-live] [--json out.json]

The same measurement as the "Live monitoring" section of `hbci-bench` (hbci/bench/live.py), for a bundle of your
own. No torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hbci.bench.live import measure


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", help="default: the shipped demo bundle")
    ap.add_argument("--precision", help="default: fp32 if the bundle has it, else its first")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--size", type=int, default=480)
    ap.add_argument("--stride", type=float)
    ap.add_argument("--skip-live", action="store_true", help="leave out the camera-paced pass (it takes the "
                                                             "stream's length in wall time)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    result = measure(args.bundle, args.precision, args.fps, args.size, args.stride, realtime=not args.skip_live)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
