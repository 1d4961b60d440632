"""``python -m hcp_sandbox``."""

import sys

from hcp_sandbox.cli import main

sys.exit(main())
