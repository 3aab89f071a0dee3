"""`python export/build_engines.py --checkpoint CKPT --out BUNDLE [--precision fp32,fp16] [--engines]`.

Writes the bundle (`hbci.export.bundle`), its background gallery for per-query alert thresholds
(`hbci.runtime.gallery`, --gallery-streams), the INT8 graph through its gate, and TensorRT engines.

Exit codes (the project's table, docs/exit-codes.md): 0 done; 2 bad input (checkpoint, data, options, bundle);
6 engines were required (--require-engines) but TensorRT or a GPU is missing; 7 the INT8 accuracy gate refused the
quantized graph; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from hbci.runtime.errors import ExitCode, exit_codes_epilog

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_INPUT", "EXIT_NO_ENGINES", "EXIT_GATE"]

EXIT_OK, EXIT_INPUT, EXIT_NO_ENGINES, EXIT_GATE = ExitCode.OK, ExitCode.USAGE, ExitCode.NO_ENGINES, ExitCode.GATE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="build_engines.py", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=exit_codes_epilog((EXIT_OK, EXIT_INPUT, EXIT_NO_ENGINES, EXIT_GATE,
                                                               ExitCode.SIGINT)))
    parser.add_argument("--checkpoint", required=True, help="an hbci checkpoint (hbci-train writes best.pt)")
    parser.add_argument("--out", required=True, help="bundle folder to write or update")
    parser.add_argument("--precision", default="fp32,fp16",
                        help="comma-separated: fp32, fp16, int8 (int8 needs --calib-videos/--calib-captions)")
    parser.add_argument("--data", help="held-out dataset root: retrieval validation and threshold statistics")
    parser.add_argument("--dataset", default="csv")
    parser.add_argument("--split", default="val")
    parser.add_argument("--gallery-streams", type=int, default=8,
                        help="held-out synthetic streams for the background gallery behind per-query alert "
                             "thresholds (hbci.runtime.gallery; 0: none). Written once; --force rewrites it")
    parser.add_argument("--calib-videos", help="folder of videos (or a captions CSV) for INT8 calibration")
    parser.add_argument("--calib-texts", help="captions CSV or text file (one sentence per line) that calibrate the "
                                              "INT8 text encoder (default: the captions of --calib-videos when it "
                                              "is a CSV; with a plain folder the text encoder stays FP32)")
    parser.add_argument("--calib-captions", help="captions CSV (video,caption) for the INT8 accuracy gate")
    parser.add_argument("--engines", action="store_true", help="also build TensorRT engines (where TensorRT exists)")
    parser.add_argument("--require-engines", action="store_true", help="missing TensorRT/GPU is an error")
    parser.add_argument("--force", action="store_true", help="rebuild even if the bundle is up to date")
    return parser


def _add_engines(bundle_dir: str, required: bool) -> ExitCode:
    """Build TensorRT engines for every precision of the bundle and record them in its manifest; where TensorRT or
    a GPU is missing, say so and print the equivalent trtexec lines (an error only when engines are required)."""
    import dataclasses

    from hbci.export.engines import EngineSkipped, build_engines, trtexec_commands
    from hbci.runtime.bundle import load_bundle, write_manifest

    bundle = load_bundle(bundle_dir)
    try:
        engines = build_engines(bundle, bundle.precisions, log=lambda m: print(m, file=sys.stderr))
    except EngineSkipped as exc:
        print(f"build_engines: TensorRT engines skipped: {exc}", file=sys.stderr)
        print("the ONNX bundle is complete; to build engines elsewhere, run:", file=sys.stderr)
        for precision in bundle.precisions:
            for command in trtexec_commands(bundle, precision):
                print(f"  {command}", file=sys.stderr)
        return EXIT_NO_ENGINES if required else EXIT_OK
    write_manifest(bundle.root, dataclasses.replace(bundle.manifest, engines=engines))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    from hbci.runtime.errors import HbciError, exit_code

    args = build_parser().parse_args(argv)
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    try:
        from hbci.export.bundle import build_bundle

        manifest = build_bundle(args.checkpoint, args.out, tuple(p for p in precisions if p != "int8"),
                                args.data, args.dataset, args.split, args.force)
        if args.gallery_streams > 0 and (manifest.gallery is None or args.force):
            from hbci.runtime.gallery import build_gallery

            build_gallery(args.out, streams=args.gallery_streams, log=lambda m: print(m, file=sys.stderr))
        if "int8" in precisions:
            from hbci.calibration.gate import GateFailed, quantize_bundle

            try:
                quantize_bundle(args.out, args.calib_videos, args.calib_captions, args.calib_texts)
            except GateFailed as exc:
                print(f"build_engines: INT8 refused by the accuracy gate:\n{exc}", file=sys.stderr)
                return exit_code(exc)
        if args.engines or args.require_engines:
            return _add_engines(args.out, args.require_engines)
    except HbciError as exc:
        print(f"build_engines: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        print("build_engines: interrupted; files already written are complete (atomic writes)", file=sys.stderr)
        return ExitCode.SIGINT
    return EXIT_OK
