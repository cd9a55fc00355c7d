"""`flow tap URL NODE [-n N]`: N items passing out of a running graph's node.

Asks the status server of `flow run --status-port` (flow.status) for a tap on
NODE's main output and prints each item as one JSON line on stdout, as it
passes. The tap never slows the graph: items that pass while this command is
behind are dropped for it (counted in the node's `taps.dropped` on /status),
so the lines printed are N items that passed, not always N in a row.
Exits 0 once N items are printed (or the node's output ended first: said on
stderr), 1 for an unknown node or no connection, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import urllib.parse

from ._output import Abort, info
from ._status import Unreachable, base_url, get

TAP_MAX = 1000  # flow.status.TAP_MAX (not imported: that module imports aiohttp)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", metavar="URL", help="the status URL `flow run --status-port` printed")
    parser.add_argument("node", metavar="NODE", help="the node whose output to show")
    parser.add_argument(
        "-n", type=int, default=10, metavar="N", help=f"items to show (default 10, at most {TAP_MAX})"
    )


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.n <= TAP_MAX:
        raise Abort(f"-n: a whole number from 1 to {TAP_MAX}")
    url = f"{base_url(args.url)}/tap/{urllib.parse.quote(args.node, safe='')}?limit={args.n}"
    shown = 0
    try:
        # No timeout between items: a node may pass nothing for long (the
        # connection ends when the run does).
        with get(url, timeout=None) as response:
            for line in response:
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
                shown += 1
    except Unreachable as exc:
        raise Abort(str(exc), 1) from None
    except (OSError, http.client.HTTPException) as exc:  # the run ended while the items streamed
        info(f"flow: tap: the connection ended after {shown} items: {exc}")
        return 0 if shown else 1
    if shown < args.n:
        info(f"flow: tap: {args.node}'s output ended after {shown} of {args.n} items")
    return 0
