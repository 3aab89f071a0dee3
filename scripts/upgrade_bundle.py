"""Rewrite a format-1 bundle's manifest as format 2, whose bundle id names the model instead of the manifest's
content (files untouched; see hbci.runtime.bundle). No torch.

    python scripts/upgrade_bundle.py runtime/demo/bundle
"""

from __future__ import annotations

import argparse
import json
import sys

from hbci.runtime.bundle import load_bundle, upgrade_manifest
from hbci.runtime.errors import HbciError, exit_code


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", help="bundle folder with a format-1 manifest.json")
    args = ap.parse_args(argv)
    try:
        manifest = upgrade_manifest(args.bundle)
        load_bundle(args.bundle)  # verifies every file against the new manifest
    except HbciError as exc:
        print(f"upgrade_bundle: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    print(json.dumps({"bundle": args.bundle, "bundle_id": manifest.bundle_id, "format_version":
                      manifest.format_version, "model_precision": manifest.model_precision}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
