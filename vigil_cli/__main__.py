"""``python -m vigil_cli ...`` is the `vigil` command (tests and tools start it so)."""

import sys

from vigil_cli.main import main

sys.exit(main())
