"""``wrtci run SERVICE``: run one central daemon in the foreground."""

from __future__ import annotations

import argparse

from wrtci.core.runtime import daemon_main
from wrtci.services import registry


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("run", help="run a central service in the foreground")
    parser.add_argument("service", choices=sorted(registry.SERVICES) or None,
                        help="service name")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="--config FILE, --check")
    parser.set_defaults(func=run_service)


def run_service(args: argparse.Namespace) -> int:
    module = registry.load(args.service)
    return daemon_main(args.service, module.Config, module.run, module.check, args.rest)
