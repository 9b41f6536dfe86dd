"""The NATS identities wrtci manages: NKey users for the labs and the central services.

Why NKeys rather than decentralised JWT accounts: wrtci runs one account on
its own servers, so the server configuration can hold every user. An NKey
user is a public key plus its permissions in that file; the lab keeps the
seed (its private key), which never leaves the machine it was made on except
to go to the lab. Adding or revoking a lab rewrites one generated file and
reloads the server (SIGHUP, no restart, existing connections of a removed
user are closed at once). JWT accounts would need an operator, an account
resolver and the ``nsc`` tool for the same result; they pay off when many
organisations run their own accounts, which wrtci does not need.

Layout of the auth directory (``[nats_admin] auth_dir``)::

    auth.conf          generated; ``include`` it from the nats-server config
    central.json       the central services' public keys
    labs/<lab>.json    one record per lab: key, device types, revocation
    creds/<user>.nk    seeds (mode 0600): hand each to its user and delete it here

Every lab's permissions are derived from its name and device types
(:func:`lab_permissions`): it publishes only below ``<prefix>.lab.<lab>.>``,
writes only its own KV keys, fetches and acks only on its device types' job
consumers, and reads only its own inbox, its control subject, job
cancellations and its device types' job and wake-up subjects (the wake-up signal).
It gets no subject of the secrets bucket (the central ``Nats-Msg-Id`` key,
``core/publisher.py``); central users have no restriction.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
from pathlib import Path

import msgspec
import nkeys

from wrtci.proto.subjects import Priority, Subjects
from wrtci.proto.tokens import encode_key_part

LAB_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
CENTRAL_USERS = ("scheduler", "timeout", "logs", "results", "trigger", "api", "notifier",
                 "admin")
"""One user per central service (``admin``: the ``wrtci`` command line)."""
JS_API = "$JS.API"

LAB_CREDS_PATH = "/etc/wrtci/lab.creds"
"""Where a lab host keeps its seed: deploy/systemd/wrtci-lab.service reads it there."""


class AuthError(ValueError):
    pass


class NatsAdminConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``[nats_admin]`` in the site file: where ``wrtci lab`` keeps the NATS users."""

    auth_dir: str = "/etc/nats/wrtci"
    pid_file: str | None = None
    """nats-server's ``pid_file``: after a change the server is sent SIGHUP (reload)."""
    lab_url: str | None = None
    """The NATS url labs connect to (printed in their lab.toml); default ``[nats] url``."""
    lab_tls_ca_file: str | None = None
    """The CA file path labs should use (printed in their lab.toml)."""


class LabEntry(msgspec.Struct, kw_only=True):
    name: str
    public_key: str
    device_types: list[str]
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def new_user() -> tuple[str, str]:
    """A new NKey user: (public key ``U…``, seed ``SU…``)."""
    raw = os.urandom(32)
    seed = nkeys.encode_seed(raw, nkeys.PREFIX_BYTE_USER)
    return nkeys.from_seed(bytearray(seed)).public_key.decode(), seed.decode()


def check_lab_name(name: str) -> str:
    if not LAB_NAME_RE.match(name):
        raise AuthError(f"invalid lab name {name!r}: want [a-z0-9][a-z0-9_-]{{0,62}}")
    if name in CENTRAL_USERS:
        raise AuthError(f"{name!r} is the name of a central service user")
    return name


def lab_permissions(subjects: Subjects, lab: str, device_types: list[str]) -> dict:
    """What a lab may publish and subscribe to (nats-server permission syntax)."""
    labs_kv, devices_kv = subjects.labs_bucket, subjects.devices_bucket
    lab_key = subjects.lab_key(lab)
    device_keys = f"{encode_key_part(lab)}.>"
    publish = [
        subjects.lab_scope(lab),
        f"$KV.{labs_kv}.{lab_key}",
        f"$KV.{devices_kv}.{device_keys}",
        f"{JS_API}.INFO",
        f"{JS_API}.STREAM.INFO.KV_{labs_kv}",
        f"{JS_API}.STREAM.INFO.KV_{devices_kv}",
        f"{JS_API}.DIRECT.GET.KV_{labs_kv}.$KV.{labs_kv}.{lab_key}",
        f"{JS_API}.DIRECT.GET.KV_{devices_kv}.$KV.{devices_kv}.{device_keys}",
    ]
    subscribe = [
        f"{subjects.lab_inbox_prefix(lab)}.>",
        subjects.lab_control(lab),
        subjects.event("job.cancelled"),
    ]
    # Jobs come as answers to its pull requests (on its inbox), never from a
    # subscription to the job subjects: it only hears its device types' wake-ups.
    stream = subjects.jobs_stream
    for device_type in sorted(set(device_types)):
        subscribe.append(subjects.wakes_of_type(device_type))
        for priority in Priority:
            consumer = subjects.job_consumer(priority, device_type)
            publish += [f"{JS_API}.CONSUMER.INFO.{stream}.{consumer}",
                        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{consumer}",
                        f"$JS.ACK.{stream}.{consumer}.>"]
    # allow_responses: answering its control requests (the reply subject only).
    return {"publish": {"allow": publish}, "subscribe": {"allow": subscribe},
            "allow_responses": True}


def _quote(value: str) -> str:
    return json.dumps(value)


def _permissions_text(perms: dict, indent: str) -> str:
    def block(kind: str) -> str:
        items = ",\n".join(f"{indent}      {_quote(s)}" for s in perms[kind]["allow"])
        return f"{indent}    {kind}: {{ allow: [\n{items}\n{indent}    ] }}"

    return (f"{indent}  permissions: {{\n{block('publish')}\n{block('subscribe')}\n"
            f"{indent}    allow_responses: true\n{indent}  }}")


class AuthDir:
    """The generated NATS authorization and the records it is made from."""

    def __init__(self, path: str | os.PathLike[str], subjects: Subjects) -> None:
        self.path = Path(path)
        self.subjects = subjects

    @property
    def conf(self) -> Path:
        return self.path / "auth.conf"

    def creds(self, user: str) -> Path:
        return self.path / "creds" / f"{user}.nk"

    def _lab_file(self, name: str) -> Path:
        return self.path / "labs" / f"{name}.json"

    def _write_seed(self, user: str, seed: str) -> Path:
        path = self.creds(user)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(seed + "\n")
        return path

    # -- records --------------------------------------------------------------------

    def central(self) -> dict[str, str]:
        path = self.path / "central.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def ensure_central_users(self) -> list[str]:
        """Create the central services' users that are missing; returns the new ones."""
        users = self.central()
        created = []
        for name in CENTRAL_USERS:
            if name not in users:
                public, seed = new_user()
                self._write_seed(name, seed)
                users[name] = public
                created.append(name)
        if created:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / "central.json").write_text(json.dumps(users, indent=2) + "\n")
        return created

    def labs(self) -> list[LabEntry]:
        directory = self.path / "labs"
        if not directory.is_dir():
            return []
        return [msgspec.json.decode(p.read_bytes(), type=LabEntry)
                for p in sorted(directory.glob("*.json"))]

    def lab(self, name: str) -> LabEntry | None:
        path = self._lab_file(check_lab_name(name))
        return msgspec.json.decode(path.read_bytes(), type=LabEntry) if path.exists() else None

    def _save_lab(self, entry: LabEntry) -> None:
        path = self._lab_file(entry.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(msgspec.json.format(msgspec.json.encode(entry)) + b"\n")

    def add_lab(self, name: str, device_types: list[str]) -> tuple[LabEntry, Path]:
        """A new lab user (a revoked lab gets a new key); returns it and its seed file."""
        existing = self.lab(name)
        if existing is not None and existing.active:
            raise AuthError(f"lab {name!r} exists; revoke it first to issue new credentials")
        if not device_types:
            raise AuthError("a lab needs at least one --device-type")
        public, seed = new_user()
        entry = LabEntry(name=name, public_key=public, device_types=sorted(set(device_types)),
                         created_at=dt.datetime.now(dt.UTC))
        seed_path = self._write_seed(f"lab-{name}", seed)
        self._save_lab(entry)
        self.write_conf()
        return entry, seed_path

    def revoke_lab(self, name: str) -> LabEntry:
        entry = self.lab(name)
        if entry is None:
            raise AuthError(f"unknown lab {name!r}")
        if entry.active:
            entry.revoked_at = dt.datetime.now(dt.UTC)
            self._save_lab(entry)
        self.creds(f"lab-{name}").unlink(missing_ok=True)
        self.write_conf()
        return entry

    # -- the server configuration -------------------------------------------------------

    def render(self) -> str:
        lines = ["# Generated by `wrtci lab add/revoke`: do not edit by hand.",
                 "# Include it from the nats-server configuration; `nats-server --signal",
                 "# reload` (SIGHUP) applies a change without a restart.",
                 "authorization {", "  users: ["]
        for name, public in sorted(self.central().items()):
            lines.append(f"    # central service: {name}")
            lines.append(f"    {{ nkey: {_quote(public)} }}")
        for entry in self.labs():
            if not entry.active:
                continue
            perms = lab_permissions(self.subjects, entry.name, entry.device_types)
            lines.append(f"    # lab {entry.name}: {', '.join(entry.device_types)}")
            lines.append(f"    {{\n      nkey: {_quote(entry.public_key)}")
            lines.append(_permissions_text(perms, "    "))
            lines.append("    }")
        lines += ["  ]", "}", ""]
        return "\n".join(lines)

    def write_conf(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.conf.with_suffix(".tmp")
        tmp.write_text(self.render())
        tmp.replace(self.conf)
        return self.conf


def reload_server(pid_file: str | None) -> str:
    """Ask nats-server to reload its configuration; says what was done."""
    if not pid_file:
        return ("no [nats_admin] pid_file: reload NATS yourself "
                "(systemctl reload nats-server, or nats-server --signal reload)")
    try:
        pid = int(Path(pid_file).read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        raise AuthError(f"cannot signal nats-server (pid file {pid_file}): {exc}") from exc
    return f"nats-server (pid {pid}) reloads its configuration"


def lab_toml(entry: LabEntry, nats_url: str, prefix: str, ca_file: str | None) -> str:
    """The ``[nats]`` and ``[lab]`` part of the lab's lab.toml."""
    lines = ["[nats]", f"url = {_quote(nats_url)}", f"prefix = {_quote(prefix)}",
             f"creds_file = {_quote(LAB_CREDS_PATH)}"]
    if ca_file:
        lines.append(f"tls_ca_file = {_quote(ca_file)}")
    lines += ["", "[lab]", f"name = {_quote(entry.name)}",
              f"# devices of type: {', '.join(entry.device_types)}"]
    return "\n".join(lines) + "\n"


__all__ = ["AuthDir", "AuthError", "LabEntry", "NatsAdminConfig",
           "lab_permissions", "lab_toml", "reload_server"]
