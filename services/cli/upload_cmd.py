"""``wrtci upload FILE... --device-type T``: a developer's firmware, through the trigger.

Posts the files to the trigger's ``POST /api/v1/firmware`` (multipart, the
same endpoint any HTTP client uses) with an API token of scope ``upload``,
and prints the firmware id and its web page. Where to: ``--url``, else
``WRTCI_UPLOAD_URL``, else ``[trigger.web]`` of the site file (``--config`` /
``WRTCI_CONFIG``, which ``wrtci up`` writes). The token: ``--token``, else
``WRTCI_TOKEN``, else the file named by ``WRTCI_TOKEN_FILE`` (``wrtci up``
stores its local token in ``<state dir>/api-token``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import sys
from pathlib import Path
from urllib.parse import quote

import aiohttp
import msgspec

from wrtci.services.cli.common import CliError, add_config_argument, env_token


class _WebSection(msgspec.Struct, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8071


class _TriggerSection(msgspec.Struct, kw_only=True):
    web: _WebSection = msgspec.field(default_factory=_WebSection)


class _ApiSection(msgspec.Struct, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8072


class _NotifierSection(msgspec.Struct, kw_only=True):
    web_url: str | None = None


class UploadSite(msgspec.Struct, kw_only=True):
    """What ``wrtci upload`` reads of the site file: where the trigger and the pages are.
    Other keys of these sections belong to their daemons and are ignored here."""

    trigger: _TriggerSection = msgspec.field(default_factory=_TriggerSection)
    api: _ApiSection = msgspec.field(default_factory=_ApiSection)
    notifier: _NotifierSection = msgspec.field(default_factory=_NotifierSection)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("upload", help="upload a firmware for testing (API token, "
                                           "scope upload)")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE",
                        help="image file(s) of one firmware, e.g. "
                             "openwrt-x86-64-generic-squashfs-combined.img.gz")
    parser.add_argument("--device-type", required=True, metavar="T",
                        help="target/subtarget[/profile], e.g. ath79/generic/tplink_archer-c7-v2")
    parser.add_argument("--version", help="firmware version (default: custom)")
    parser.add_argument("--revision", help="source revision, e.g. r28427-6df0e3d02a")
    parser.add_argument("--image-type", help="when the file name does not say "
                                             "(sysupgrade, factory, kernel, rootfs, combined)")
    parser.add_argument("--url", help="the trigger's base URL (default: $WRTCI_UPLOAD_URL, "
                                      "else [trigger.web] of the site file)")
    parser.add_argument("--web-url", help="base URL of the results pages, for the link "
                                          "(default: $WRTCI_WEB_URL, else the site file)")
    parser.add_argument("--token", help="API token (default: $WRTCI_TOKEN, "
                                        "else the file $WRTCI_TOKEN_FILE)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds for the whole upload (default 600)")
    add_config_argument(parser)
    parser.set_defaults(func=run_upload)



def _token(args: argparse.Namespace) -> str:
    token = env_token(args.token)
    if not token:
        raise CliError("no API token: give --token, WRTCI_TOKEN or WRTCI_TOKEN_FILE "
                       "(wrtci token create NAME --scope upload)")
    return token


def _urls(args: argparse.Namespace) -> tuple[str, str]:
    from wrtci.core.config import load_config

    site = load_config(UploadSite, args.config)
    url = args.url or os.environ.get("WRTCI_UPLOAD_URL") or \
        f"http://{site.trigger.web.host}:{site.trigger.web.port}"
    web = args.web_url or os.environ.get("WRTCI_WEB_URL") or site.notifier.web_url or \
        f"http://{site.api.host}:{site.api.port}"
    return url.rstrip("/"), web.rstrip("/")


def _fields(args: argparse.Namespace) -> dict[str, str]:
    fields = {"device_type": args.device_type}
    for name in ("version", "revision", "image_type"):
        if getattr(args, name):
            fields[name] = getattr(args, name)
    if len(args.files) == 1:  # the trigger checks it: a broken transfer is refused (422)
        digest = hashlib.sha256()
        with args.files[0].open("rb") as f:
            while chunk := f.read(1024 * 1024):
                digest.update(chunk)
        fields["sha256"] = digest.hexdigest()
    return fields


async def upload(url: str, token: str, files: list[Path], fields: dict[str, str],
                 timeout_s: float) -> tuple[int, dict]:
    """POST the multipart form, streaming the files; the trigger's status and JSON answer."""
    form = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields.items():
        form.add_field(name, value)
    with contextlib.ExitStack() as stack:
        for path in files:
            form.add_field("file", stack.enter_context(path.open("rb")), filename=path.name,
                           content_type="application/octet-stream")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s, \
                s.post(f"{url}/api/v1/firmware", data=form,
                       headers={"Authorization": f"Bearer {token}"}) as resp:
            raw = await resp.read()
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        body = {"error": raw[:300].decode(errors="replace") or f"HTTP {resp.status}"}
    return resp.status, body if isinstance(body, dict) else {"error": str(body)}


_HINTS = {401: "check the token (wrtci token list: expired or revoked?)",
          403: "the token needs scope upload (wrtci token create NAME --scope upload)"}


def run_upload(args: argparse.Namespace) -> int:
    for path in args.files:
        if not path.is_file():
            raise CliError(f"{path}: no such file")
    token = _token(args)
    url, web = _urls(args)
    try:
        status, body = asyncio.run(upload(url, token, args.files, _fields(args), args.timeout))
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise CliError(f"upload to {url} failed: {exc or type(exc).__name__}") from None
    if status not in (200, 201):
        hint = _HINTS.get(status)
        print(f"wrtci upload: refused ({status}): {body.get('error', body)}"
              + (f"\n  {hint}" if hint else ""), file=sys.stderr)
        return 1
    firmware_id = body["firmware_id"]
    news = "recorded, jobs follow" if status == 201 else "already known (same files)"
    print(f"firmware {firmware_id}: {news}")
    for image in body.get("images", []):
        print(f"  {image['name']}  {image['type']}  {image['size']} bytes")
    print(f"{web}/firmware/{quote(firmware_id, safe=':')}")
    return 0
