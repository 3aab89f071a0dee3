"""`hbci-synth`: write the synthetic benchmark and print a JSON summary on stdout."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from hbci.runtime.errors import ExitCode, HbciError, exit_code, exit_codes_epilog
from hbci.synth.dataset import generate

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: the project's table (docs/exit-codes.md): 0 written, 2 bad arguments or input."""
    ap = argparse.ArgumentParser(prog="hbci-synth", description="Synthetic text-video benchmark: coloured shapes "
                                 "that move, grow, shrink, appear and vanish, with template captions.",
                                 epilog=exit_codes_epilog((ExitCode.OK, ExitCode.INTERNAL, ExitCode.USAGE)),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--world", choices=("wide", "classic"), default="wide",
                    help="wide: varied looks, sizes, speeds, timing and phrasing, training clips in context, a "
                         "held-out-look test split; classic: the first benchmark's single look")
    ap.add_argument("--train", type=int, default=8000, help="clips in the train split")
    ap.add_argument("--val", type=int, default=200)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--heldout", type=int, default=None,
                    help="clips in the held-out-look test split (default: as many as --test; wide world only)")
    ap.add_argument("--context", type=float, default=None,
                    help="most seconds of neighbouring content on each side of a training clip (default 1.25; "
                         "wide world only)")
    ap.add_argument("--frames", type=int, default=24, help="frames per clip")
    ap.add_argument("--size", type=int, default=64, help="frame side in pixels (even)")
    ap.add_argument("--fps", type=float, default=8.0)
    ap.add_argument("--workers", type=int, default=1, help="processes rendering and writing videos")
    ap.add_argument("--train-captions", type=int, default=1, help="distinct captions per training clip")
    ap.add_argument("--p-single", type=float, default=0.25, help="share of one-event clips")
    args = ap.parse_args(argv)
    try:
        summary = generate(args.out, args.seed, args.train, args.val, args.test, args.frames, args.size, args.fps,
                           args.workers, args.train_captions, args.p_single, args.world, args.heldout, args.context)
    except ValueError as e:
        ap.error(str(e))
    except HbciError as exc:
        print(f"hbci-synth: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    print(json.dumps(summary))
    return 0
