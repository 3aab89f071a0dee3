"""Copy one precision of a bundle into a new, smaller bundle (the shipped demo keeps only its FP16 graphs).

    python scripts/ship_demo_bundle.py BUNDLE runtime/demo/bundle --precision fp16

Only the files the kept precision needs are copied. The manifest says what was dropped and which bundle it came
from ("shipped"); the bundle id stays the source's, since it names the model (the FP32 graphs' hashes are kept). The calibrated
thresholds (score_stats) are the source bundle's: export computes them on the FP32 graphs, which the FP16 graphs
are validated against. The copy is loaded and self-checked before this script reports success. No torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

from hbci.runtime.bundle import Manifest, Shipped, load_bundle, write_manifest
from hbci.runtime.errors import HbciError, exit_code
from hbci.runtime.retriever import Retriever


def ship(source: Path, out: Path, precision: str) -> Manifest:
    bundle = load_bundle(source)
    manifest = bundle.manifest
    if precision not in bundle.precisions:
        raise HbciError(f"{source}: no {precision} graphs (has: {', '.join(bundle.precisions)})")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    kept = dataclasses.replace(manifest, engines=None)
    for rel in kept.files_of(precision):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / rel, out / rel)
    shipped = dataclasses.replace(
        kept, graphs={precision: manifest.graphs[precision]}, precisions=(precision,), files={},
        shipped=Shipped(from_bundle_id=manifest.bundle_id,
                        dropped_precisions=tuple(sorted(set(bundle.precisions) - {precision})),
                        dropped_engines=bool(manifest.engines)))
    result = write_manifest(out, shipped)
    # The bundle writers create files through mkstemp (mode 0600); a shipped bundle is read by any user.
    for path in out.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    retriever = Retriever.load(out, backend="onnxruntime-cpu", precision=precision)  # verifies and self-checks
    del retriever
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="bundle built by export/build_engines.py (with --data)")
    ap.add_argument("out", type=Path, help="folder to (re)write")
    ap.add_argument("--precision", default="fp16")
    args = ap.parse_args(argv)
    try:
        manifest = ship(args.source, args.out, args.precision)
    except HbciError as exc:
        print(f"ship_demo_bundle: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    threshold = manifest.thresholds
    print(json.dumps({"out": str(args.out), "bundle_id": manifest.bundle_id, "bytes": size,
                      "threshold": None if threshold is None else threshold.to_dict()}))
    if threshold is None:
        print("ship_demo_bundle: warning: no score_stats (export with --data): the monitor will need --threshold",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
