"""`python -m flow`: the same as the `flow` command."""

from __future__ import annotations

import sys

try:
    from flow.cli import main
except KeyboardInterrupt:  # Ctrl-C while flow itself is being imported: no traceback
    sys.exit(130)

sys.exit(main())
