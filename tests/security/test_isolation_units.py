"""Configuration, generated permissions, TLS and the lab-host command line."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wrtci.core.config import NatsConfig, load_config
from wrtci.core.runtime import connect_nats
from wrtci.lab_daemon.config import Config as LabConfig
from wrtci.proto.subjects import Subjects
from wrtci.services.cli.common import CliConfig
from wrtci.services.natsauth import AuthDir, AuthError, lab_permissions
from wrtci.services.stack.servers import NatsServer

PROJECT = Path(__file__).resolve().parents[2]


# -- configuration -----------------------------------------------------------------


def test_creds_file_override_sets_the_field_itself(tmp_path) -> None:
    """WRTCI_NATS__CREDS_FILE names the file (a field ending in _file), not a secret to read."""
    lab = tmp_path / "lab.toml"
    lab.write_text('[lab]\nname = "lab1"\nsuite_dir = "/srv/suite"\n')
    config = load_config(LabConfig, lab, environ={"WRTCI_NATS__CREDS_FILE": "/etc/wrtci/l.nk"})
    assert config.nats.creds_file == "/etc/wrtci/l.nk"


def test_file_suffix_still_reads_secrets_of_fields_without_it(tmp_path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    config = load_config(CliConfig, None, environ={"WRTCI_NATS__PASSWORD_FILE": str(secret)})
    assert config.nats.password == "s3cret"


# -- generated permissions ----------------------------------------------------------


def test_lab_permissions_name_only_its_own_scope_keys_and_consumers() -> None:
    subjects = Subjects("wrtci")
    perms = lab_permissions(subjects, "lab-a", ["ath79/generic/a"])
    publish, subscribe = perms["publish"]["allow"], perms["subscribe"]["allow"]
    assert "wrtci.lab.lab-a.>" in publish
    assert not any("lab-b" in s or (s.endswith(".>") and "lab-a" not in s and "$JS.ACK" not in s)
                   for s in publish)
    consumer = subjects.job_consumer(5, "ath79/generic/a")
    assert f"$JS.API.CONSUMER.MSG.NEXT.WRTCI_JOBS.{consumer}" in publish
    assert not any("CONSUMER.CREATE" in s or "DURABLE" in s or "STREAM.MSG.GET" in s
                   for s in publish)
    assert "_INBOX.>" not in subscribe and "_INBOX_WRTCI.lab-a.>" in subscribe
    # Wake-ups of its type, never the job subjects (jobs come through its pull requests).
    assert subjects.wakes_of_type("ath79/generic/a") in subscribe
    assert not any(s.startswith("wrtci.job.") for s in subscribe)
    # The central secrets (the Nats-Msg-Id key): no subject of that bucket, nor a
    # wildcard that could reach it.
    assert not any(subjects.secrets_bucket in s or s.startswith(("$JS.API.>", "$KV.>", ">"))
                   for s in publish + subscribe)


def test_lab_names_are_checked_and_a_lab_is_added_once(tmp_path) -> None:
    auth = AuthDir(tmp_path, Subjects("wrtci"))
    with pytest.raises(AuthError, match="invalid lab name"):
        auth.add_lab("Lab A", ["x/y/z"])
    with pytest.raises(AuthError, match="central service"):
        auth.add_lab("scheduler", ["x/y/z"])
    entry, seed = auth.add_lab("lab-a", ["x/y/z"])
    assert seed.stat().st_mode & 0o077 == 0 and seed.read_text().startswith("SU")
    assert entry.public_key in auth.conf.read_text()
    with pytest.raises(AuthError, match="exists"):
        auth.add_lab("lab-a", ["x/y/z"])
    auth.revoke_lab("lab-a")
    assert entry.public_key not in auth.conf.read_text() and not seed.exists()


# -- TLS ----------------------------------------------------------------------------


def _cert(subject: str, key, issuer_key, issuer_name=None, *, ca: bool = False):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer_name or name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(path: Path, obj) -> Path:
    if isinstance(obj, x509.Certificate):
        path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(obj.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return path


@pytest.fixture
def tls_server(tmp_path):
    """A nats-server that requires TLS, with a certificate of a CA made here."""
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), \
        ec.generate_private_key(ec.SECP256R1())
    ca = _cert("wrtci test CA", ca_key, ca_key, ca=True)
    server = _cert("localhost", server_key, ca_key, ca.subject)
    ca_file = _pem(tmp_path / "ca.pem", ca)
    conf = tmp_path / "nats.conf"
    conf.write_text(f'tls {{\n  cert_file: "{_pem(tmp_path / "server.pem", server)}"\n'
                    f'  key_file: "{_pem(tmp_path / "server.key", server_key)}"\n}}\n')
    nats = NatsServer(tmp_path / "store", config_file=conf).start()
    yield nats, ca_file
    nats.stop()


async def test_tls_with_the_ca_works_and_plain_is_refused(tls_server) -> None:
    server, ca_file = tls_server
    config = NatsConfig(url=f"tls://127.0.0.1:{server.port}", tls_ca_file=str(ca_file),
                        prefix="tls")
    nc = await connect_nats(config, "tls-client", max_reconnect_attempts=0)
    try:
        info = await nc.jetstream().account_info()
        assert info is not None
    finally:
        await nc.close()

    def plain() -> bytes:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.recv(4096)  # INFO {..."tls_required":true...}
            sock.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
            return sock.recv(4096)

    # The server drops a client that does not start TLS: no PONG, the socket closed.
    reply = await asyncio.to_thread(plain)
    assert b"PONG" not in reply and (reply == b"" or reply.startswith(b"-ERR")), reply
    # A client that does not trust the CA is refused too.
    with pytest.raises(Exception):  # noqa: B017 (ssl or nats-py errors)
        await connect_nats(NatsConfig(url=config.url, prefix="tls", connect_timeout_s=2),
                           "untrusting", max_reconnect_attempts=0)


# -- a lab host's command line ----------------------------------------------------------


def test_wrtci_help_runs_without_the_central_packages() -> None:
    """On a host with only wrtci[lab] (no asyncpg, minio): --help and a lab command."""
    code = ("import sys\n"
            "for name in ('asyncpg', 'minio'):\n"
            "    sys.modules[name] = None\n"
            "from services.cli.main import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    for argv in (["--help"], ["lab", "--help"]):
        result = subprocess.run([sys.executable, "-c", code, *argv], cwd=PROJECT,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    result = subprocess.run([sys.executable, "-c", code, "db", "migrate", "--help"],
                            cwd=PROJECT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "wrtci[central]" in result.stderr
