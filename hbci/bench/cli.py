"""`hbci-bench [--quick] [--out DIR] [--work DIR] [--sections a,b]`: run the benchmarks, write BENCHMARKS.md and
benchmarks.json into DIR.

Exit codes: 0 every section ran (or said why it cannot run here), 1 a section failed (the files still hold
every figure and the error), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hbci.bench import SECTIONS

__all__ = ["main"]


def _default_work() -> Path:
    from hbci.runtime.demo import cache_dir

    return cache_dir().parent / "bench"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hbci-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings for a CI-sized run (seconds, not "
                                                             "meaningful figures)")
    parser.add_argument("--out", default=".", help="where BENCHMARKS.md and benchmarks.json go (%(default)s)")
    parser.add_argument("--work", help="where built models and bundles are kept between runs (default: "
                                       "$HBCI_CACHE/bench or ~/.cache/hbci/bench)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated, from: %(default)s")
    args = parser.parse_args(argv)
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        parser.error(f"unknown section(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(SECTIONS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from hbci.bench.runner import Context, run, write

    work = Path(args.work) if args.work else _default_work()
    out = Path(args.out)
    result = run(Context(work=work, quick=args.quick), sections, progress=lambda partial: write(partial, out))
    md, js = write(result, out)
    failed = [n for n, s in result["sections"].items() if "error" in s]
    print(f"wrote {md} and {js}" + (f"; FAILED: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
