"""`python -m hbci.synth`: the hbci-synth CLI."""

import sys

from hbci.synth.cli import main

if __name__ == "__main__":  # importing the module (the layering test imports every module) runs nothing
    sys.exit(main())
