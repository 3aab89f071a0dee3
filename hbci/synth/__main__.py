"""`python -m hbci.synth`: the hbci-synth CLI."""

import sys

from hbci.synth.cli import main

sys.exit(main())
