"""Entry point: `python export/build_engines.py --checkpoint CKPT --out BUNDLE [--precision fp32,fp16] [--engines]`.

A thin script around `hbci.export.build.main`; run it from the repository root (or anywhere hbci is installed).
"""

import sys

from hbci.export.build import main

if __name__ == "__main__":
    sys.exit(main())
