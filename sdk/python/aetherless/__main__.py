"""``python3 -m aetherless HANDLER.py``: run a handler under the Aetherless orchestrator."""

import sys

from aetherless.runtime import main

sys.exit(main(sys.argv))
