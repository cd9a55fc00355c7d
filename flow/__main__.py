"""`python -m flow`: the same as the `flow` command."""

from __future__ import annotations

import sys

from flow.cli import main

sys.exit(main())
