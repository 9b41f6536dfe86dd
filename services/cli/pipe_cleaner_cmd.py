"""``wrtci pipe-cleaner``: push the smoke firmware through a running installation.

Exit 0 when it comes out done with passing tests and a stored console log
within ``--timeout``, else 1 (see services/stack/pipe_cleaner.py). The smoke
firmware is the virtual lab's (built once, or reused, next to the site file
as ``wrtci up`` keeps it); ``--firmware`` names another image for x86/64.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from pathlib import Path

from wrtci.services.cli.common import add_command, cli_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = add_command(sub, "pipe-cleaner", run, "does the whole system work? (exit 0/1)")
    parser.add_argument("--firmware", type=Path,
                        help="the image to push (default: the virtual lab's smoke firmware)")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds until the firmware must be done with its results")
    parser.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)


def smoke_firmware(args: argparse.Namespace):
    from wrtci.services.stack import virtual_lab
    from wrtci.services.stack.pipe_cleaner import SmokeFirmware

    if args.firmware is not None:
        return SmokeFirmware(image=args.firmware, version=virtual_lab.VERSION,
                             revision=virtual_lab.REVISION)
    base = Path(args.config).resolve().parent if args.config else Path(".wrtci")
    built = virtual_lab.build_firmware(base / "virtual-lab")
    if built is None:
        return None
    return SmokeFirmware(image=built.image, version=built.version, revision=built.revision)


def run(args: argparse.Namespace) -> int:
    from wrtci.services.stack.pipe_cleaner import run_pipe_cleaner

    config = cli_config(args)
    smoke = smoke_firmware(args)
    if smoke is None or not smoke.image.is_file():
        print("pipe-cleaner: FAILED: no smoke firmware (building the virtual lab's failed; "
              "see deploy/virtual-lab, or give --firmware)", file=sys.stderr)
        return 1
    sha256 = hashlib.sha256(smoke.image.read_bytes()).hexdigest()
    return asyncio.run(run_pipe_cleaner(config, smoke, sha256, timeout_s=args.timeout,
                                        interval_s=args.interval, out=sys.stdout))
