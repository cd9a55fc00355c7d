"""`python -m mocks` (also `flow mocks`): run mock APIs and vendors on 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import msgspec

from flow.units import parse_duration, parse_rate

from ._spec import STYLES, VENDOR_STYLES, ServerSpec, parse_range

EPILOG = """\
examples:
  python -m mocks --style dummyjson --style platzi --products 150
  python -m mocks --style reqres --error-rate 0.1 --latency 50ms..400ms --seed 7
  python -m mocks --style sync_vendor --style async_vendor --callback-duplicate-rate 0.1
  python -m mocks --config graph.yaml            # the servers of its 'mocks:' block
  python -m mocks --config graph.yaml --rate-limit off   # flags override every server

each server prints its URL; GET <url>/__stats shows every request it saw and the
ids it served (ground truth), POST <url>/__reset clears them.
exit codes: 0 stopped by Ctrl-C/SIGTERM, 2 bad option, value or config file."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _checked(parse: Callable[[str], Any], what: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        try:
            parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return text

    check.__name__ = what
    return check


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text!r}")
    return value


def build_parser(prog: str = "python -m mocks") -> argparse.ArgumentParser:
    p = _Parser(
        prog=prog,
        description="Run mock e-commerce APIs (paginated JSON, real rate "
        "limits, injected faults) and mock vendors of a fetch service (sync, or "
        "async with signed callbacks) on 127.0.0.1.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config", metavar="FILE", help="start the servers of the 'mocks:' block of FILE (a graph.yaml)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument(
        "--dump",
        action="store_true",
        help="print the servers' catalogues as one JSON object (collection name -> records, as each "
        "style serves them: a db.json for json-server) and exit; nothing is served",
    )
    g = p.add_argument_group("servers (each flag overrides every server of --config)")
    g.add_argument(
        "--style",
        action="append",
        choices=(*STYLES, *VENDOR_STYLES),
        help="API to imitate; repeat for several servers (default: dummyjson)",
    )
    g.add_argument(
        "--port",
        type=int,
        metavar="N",
        help="first port; servers take consecutive ports (default: 0, any free port)",
    )
    g.add_argument("--products", type=int, metavar="N", help="catalogue size, 1..1000000 (default: 200)")
    g.add_argument("--seed", type=int, metavar="N", help="seed for catalogue and faults (default: 0)")
    g.add_argument(
        "--page-size", type=int, metavar="N", help="page size when the client names none (default: 20)"
    )
    g.add_argument("--max-page-size", type=int, metavar="N", help="largest page served (default: 100)")
    g.add_argument(
        "--rate-limit",
        type=_checked(parse_rate, "rate"),
        metavar="RATE",
        help="sliding-window limit, e.g. 5/s, 10/2s, or off (default: 5/s)",
    )
    g.add_argument(
        "--api-key",
        metavar="KEY",
        help="key required in the x-api-key header (reqres default: reqres-free-v1; '' turns the check off)",
    )
    f = p.add_argument_group("faults (shares are 0..1 of requests; at most one fault each)")
    f.add_argument(
        "--latency",
        type=_checked(parse_range, "duration range"),
        metavar="DURATION[..DURATION]",
        help="delay per answer, fixed (50ms) or a range (50ms..400ms)",
    )
    f.add_argument("--error-rate", type=_share, metavar="SHARE", help="500/502/503 answers")
    f.add_argument("--hang-rate", type=_share, metavar="SHARE", help="answers held back for --hang")
    f.add_argument(
        "--hang",
        type=_checked(parse_duration, "duration"),
        metavar="DURATION",
        help="how long a hang lasts (default: 30s)",
    )
    f.add_argument("--truncate-rate", type=_share, metavar="SHARE", help="200 answers with JSON cut short")
    f.add_argument("--invalid-json-rate", type=_share, metavar="SHARE", help="200 answers with invalid JSON")
    f.add_argument("--html-rate", type=_share, metavar="SHARE", help="200 answers with an HTML error page")
    f.add_argument("--reset-rate", type=_share, metavar="SHARE", help="connections reset without an answer")
    f.add_argument(
        "--outage",
        action="append",
        type=_checked(parse_range, "window"),
        metavar="START..END",
        help="fail everything in this window after start, e.g. 2s..6s; repeatable",
    )
    f.add_argument("--outage-status", type=int, metavar="CODE", help="status during outages (default: 503)")
    d = p.add_argument_group("data (shares are 0..1 of records)")
    d.add_argument(
        "--heterogeneity",
        type=_share,
        metavar="SHARE",
        help="per field: records whose price (and, independently, category and title) deviates "
        "from the style's native form (default: 0.2)",
    )
    d.add_argument(
        "--defect-rate",
        type=_share,
        metavar="SHARE",
        help="malformed records: no id, no or blank title, null or negative price (default: 0.03)",
    )
    d.add_argument(
        "--duplicate-rate",
        type=_share,
        metavar="SHARE",
        help="records repeated from an earlier page (default: 0.02)",
    )
    v = p.add_argument_group("vendors (sync_vendor, async_vendor; shares are 0..1 of jobs)")
    v.add_argument(
        "--secret",
        metavar="KEY",
        help="HMAC-SHA256 key of the async vendor's callback signatures (default: vendor-secret)",
    )
    v.add_argument(
        "--callback-delay",
        type=_checked(parse_range, "duration range"),
        metavar="DURATION[..DURATION]",
        help="wait between accepting a job and its callback (default: 50ms..500ms)",
    )
    v.add_argument(
        "--callback-duplicate-rate", type=_share, metavar="SHARE", help="callbacks sent twice (default: 0)"
    )
    v.add_argument(
        "--callback-loss-rate", type=_share, metavar="SHARE", help="callbacks never sent (default: 0)"
    )
    v.add_argument(
        "--failure-rate",
        type=_share,
        metavar="SHARE",
        help="jobs the vendor completes with status failed (default: 0)",
    )
    return p


_FLAG_FIELDS = {
    "products": "products",
    "seed": "seed",
    "page_size": "page_size",
    "max_page_size": "max_page_size",
    "rate_limit": "rate_limit",
    "api_key": "api_key",
    "latency": "latency",
    "error_rate": "error_rate",
    "hang_rate": "hang_rate",
    "hang": "hang",
    "truncate_rate": "truncate_rate",
    "invalid_json_rate": "invalid_json_rate",
    "html_rate": "html_rate",
    "reset_rate": "reset_rate",
    "outage": "outages",
    "outage_status": "outage_status",
    "heterogeneity": "heterogeneity",
    "defect_rate": "defect_rate",
    "duplicate_rate": "duplicate_rate",
    "secret": "secret",
    "callback_delay": "callback_delay",
    "callback_duplicate_rate": "callback_duplicate_rate",
    "callback_loss_rate": "callback_loss_rate",
    "failure_rate": "failure_rate",
}


def specs_from_args(args: argparse.Namespace) -> dict[str, ServerSpec]:
    """The servers to run: from --config or --style, with flags applied to all."""
    overrides = {
        field: getattr(args, flag) for flag, field in _FLAG_FIELDS.items() if getattr(args, flag) is not None
    }
    if args.config:
        from ._config import load_mocks

        base = {name: msgspec.structs.asdict(spec) for name, spec in load_mocks(args.config).items()}
        if args.style:
            raise ValueError("--style and --config do not mix; edit the config's styles instead")
    else:
        styles = args.style or ["dummyjson"]
        base = {}
        for style in styles:
            name = style if style not in base else f"{style}_{len(base) + 1}"
            base[name] = {"style": style}
    specs = {}
    for i, (name, fields) in enumerate(base.items()):
        port = args.port + i if args.port else fields.get("port", 0)
        try:
            specs[name] = msgspec.convert({**fields, **overrides, "port": port}, ServerSpec)
        except msgspec.ValidationError as err:
            raise ValueError(f"server {name!r}: {err}") from None
    return specs


async def run(specs: dict[str, ServerSpec], host: str, out: Callable[[str], None] = print) -> None:
    from ._group import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with serve(specs, host=host) as servers:
            width = max(map(len, servers))
            styles = max(10, *(len(server.spec.style) for server in servers.values()))
            for name, server in servers.items():
                spec = server.spec
                what = "a vendor" if spec.style in VENDOR_STYLES else f"{spec.products} products"
                out(
                    f"{name:<{width}}  {spec.style:<{styles}}  {server.api_url}  "
                    f"({what}, rate limit {spec.rate_limit})"
                )
            out("serving; Ctrl-C stops")
            sys.stdout.flush()
            await stop.wait()
        out("stopped")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def dump(specs: dict[str, ServerSpec]) -> str:
    """Every server's whole catalogue, rendered as its style serves records
    (defects and duplicates included, as configured), under the last part of
    its path (`/api/v1/products` -> `products`); one server: its name too.
    Vendors have no catalogue: they are left out."""
    from ._server import catalogue_of
    from .styles import make_style

    collections: dict[str, Any] = {}
    for name, spec in specs.items():
        if spec.style in VENDOR_STYLES:
            continue
        style = make_style(spec.style, spec.seed)
        catalogue = catalogue_of(spec)
        key = style.path.rstrip("/").rsplit("/", 1)[-1]
        key = key if key not in collections else f"{key}_{name}"
        collections[key] = msgspec.json.decode(bytes(style.render_page(catalogue, 0, spec.products)))
    return msgspec.json.format(msgspec.json.encode(collections), indent=2).decode()


def main(argv: Sequence[str] | None = None, prog: str = "python -m mocks") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    from ._config import ConfigError

    try:
        specs = specs_from_args(args)
    except ConfigError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:
        parser.error(str(err))
    if args.dump:
        sys.stdout.write(dump(specs) + "\n")
        return 0
    try:
        asyncio.run(run(specs, args.host))
    except OSError as err:  # e.g. the port is taken
        print(f"{prog}: error: cannot start: {err.strerror or err}", file=sys.stderr)
        return 2
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
