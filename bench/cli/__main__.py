"""``python -m bench.cli`` (and ``torchrun ... -m bench.cli``): the ``fngd-bench`` command."""

import sys

from bench.cli.app import main

sys.exit(main())
