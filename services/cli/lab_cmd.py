"""``wrtci lab add|list|revoke``: onboard a lab, list the labs, cut one off.

``add`` makes the lab's NKey user, adds its permissions to the generated
NATS authorization (``[nats_admin] auth_dir``), reloads the server, records
the lab's device types in the database, creates its job consumers and
prints the lab.toml snippet. ``revoke`` removes its user (the server closes
its connections on the reload) and queues the jobs it held again.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import msgspec

from wrtci.services.cli.common import CliConfig, add_command, command_group, nats_connection
from wrtci.services.natsauth import (
    LAB_CREDS_PATH,
    AuthDir,
    AuthError,
    NatsAdminConfig,
    check_lab_name,
)


class LabAdminConfig(CliConfig, kw_only=True, forbid_unknown_fields=True):
    nats_admin: NatsAdminConfig = msgspec.field(default_factory=NatsAdminConfig)


def add_parser(sub: argparse._SubParsersAction) -> None:
    lab_sub = command_group(sub, "lab", "onboard, list and revoke labs (NATS credentials)")
    add = add_command(lab_sub, "add", run_add, "create a lab's credentials and permissions")
    add.add_argument("name")
    add.add_argument("--device-type", action="append", default=[], required=True,
                     help="a device type the lab runs (repeat for more)")
    listing = add_command(lab_sub, "list", run_list, "the labs and their device types")
    revoke = add_command(lab_sub, "revoke", run_revoke,
                         "cut a lab off now; its jobs are queued again")
    revoke.add_argument("name")
    for command in (add, listing, revoke):
        command.add_argument("--auth-dir", help="override [nats_admin] auth_dir")


def _config(args: argparse.Namespace) -> LabAdminConfig:
    from wrtci.core.config import load_config

    config = load_config(LabAdminConfig, args.config)
    if args.auth_dir:
        config.nats_admin.auth_dir = args.auth_dir
    return config


def _auth(config: LabAdminConfig) -> AuthDir:
    return AuthDir(config.nats_admin.auth_dir, config.nats.subjects)


async def _add(config: LabAdminConfig, name: str, device_types: list[str]) -> str:
    from wrtci.proto import topology
    from wrtci.services import db
    from wrtci.services.labs import register_lab
    from wrtci.services.natsauth import lab_toml, reload_server

    auth = _auth(config)
    created = auth.ensure_central_users()
    entry, seed_path = auth.add_lab(name, device_types)
    reloaded = reload_server(config.nats_admin.pid_file)
    conn = await db.connect(config.database)
    try:
        await register_lab(conn, entry.name, entry.public_key, entry.device_types)
    finally:
        await conn.close()
    async with nats_connection(config.nats) as nc:
        js = nc.jetstream()
        await topology.apply(js, config.nats.subjects)
        await topology.ensure_job_consumers(js, config.nats.subjects, entry.device_types)
    out = [f"lab {entry.name} added (NKey user {entry.public_key})", reloaded]
    if created:
        out.append(f"central service users created: {', '.join(created)} "
                   f"(seeds in {auth.path / 'creds'})")
    out += [f"credentials (NKey seed, keep secret): {seed_path}",
            f"copy it to the lab host as {LAB_CREDS_PATH} (mode 0600), delete it here,",
            "and put this in the lab's lab.toml:", "",
            lab_toml(entry, config.nats_admin.lab_url or config.nats.url,
                     config.nats.prefix, config.nats_admin.lab_tls_ca_file)]
    return "\n".join(out)


def run_add(args: argparse.Namespace) -> int:
    try:
        check_lab_name(args.name)
        print(asyncio.run(_add(_config(args), args.name, args.device_type)))
    except AuthError as exc:
        print(f"wrtci lab add: {exc}", file=sys.stderr)
        return 2
    return 0


def run_list(args: argparse.Namespace) -> int:
    config = _config(args)
    labs = _auth(config).labs()
    if not labs:
        print(f"no labs in {config.nats_admin.auth_dir}")
        return 0
    print(f"{'LAB':20} {'STATE':8} {'ADDED':20} DEVICE TYPES")
    for entry in labs:
        state = "active" if entry.active else "revoked"
        added = entry.created_at.strftime("%Y-%m-%d %H:%M")
        print(f"{entry.name:20} {state:8} {added:20} {', '.join(entry.device_types)}")
    return 0


async def _revoke(config: LabAdminConfig, name: str) -> list[str]:
    from wrtci.services import db
    from wrtci.services.labs import requeue_held_jobs, revoke_lab
    from wrtci.services.lifecycle import Lifecycle
    from wrtci.services.lifecycle.dispatch import Dispatcher, minio_presigner
    from wrtci.services.natsauth import reload_server

    _auth(config).revoke_lab(name)
    out = [f"lab {name} revoked", reload_server(config.nats_admin.pid_file)]
    pool = await db.create_pool(config.database)
    try:
        async with pool.acquire() as conn:
            await revoke_lab(conn, name)
        async with nats_connection(config.nats) as nc:
            js = nc.jetstream(timeout=config.nats.request_timeout_s)
            dispatcher = Dispatcher(nc, js, config.nats.subjects,
                                    minio_presigner(config.storage))
            lifecycle = Lifecycle(pool, dispatcher, config.nats.subjects)
            for job_id, outcome in await requeue_held_jobs(lifecycle, name):
                out.append(f"job {job_id}: {outcome}")
    finally:
        await pool.close()
    return out


def run_revoke(args: argparse.Namespace) -> int:
    try:
        print("\n".join(asyncio.run(_revoke(_config(args), check_lab_name(args.name)))))
    except AuthError as exc:
        print(f"wrtci lab revoke: {exc}", file=sys.stderr)
        return 2
    return 0
