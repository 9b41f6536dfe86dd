"""HTTP endpoints of the trigger: developer uploads and the buildbot webhook.

``POST /api/v1/firmware`` (multipart/form-data, ``Authorization: Bearer TOKEN``)
    fields ``device_type`` (``target/subtarget[/profile]``) or ``target`` +
    ``subtarget`` [+ ``profile``]; optional ``version``, ``revision``,
    ``image_type`` (when the name does not say), ``sha256`` (checked); one or
    more file parts. Files stream to a spool file while their sha256 is
    computed, then go to object storage; the firmware is recorded and announced.
    201 new, 200 already known; 400 / 401 / 403 / 413 / 415 / 422 with ``{"error": ...}``.

``POST /api/v1/buildbot`` (``Authorization: Bearer TOKEN``)
    buildbot's build-finished JSON (see ``buildbot``).

Both take an API token of scope ``upload`` (``wrtci token create``, checked
in PostgreSQL by ``services.auth``): 401 missing, unknown, expired or revoked,
403 another scope; the token's name is the submitter.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
from pathlib import Path

import msgspec
from aiohttp import BodyPartReader, web

from wrtci.proto.events import FirmwareDiscoveredData
from wrtci.proto.model import Image, SourceKind
from wrtci.proto.storage import firmware_object_key
from wrtci.proto.subjects import PriorityClass
from wrtci.services.auth import TokenRefused, authorize
from wrtci.services.trigger import buildbot
from wrtci.services.trigger.config import WebConfig
from wrtci.services.trigger.httpcache import FetchError, NotFound
from wrtci.services.trigger.images import (
    PROFILE_RE,
    SAFE_FILE_NAME,
    classify,
    discovered_event_id,
    image_id,
    official_firmware_id,
    upload_firmware_id,
)
from wrtci.services.trigger.official import BadDocument, ProfilesIndex, VersionsIndex
from wrtci.services.trigger.official import decode as decode_document
from wrtci.services.trigger.record import INFRASTRUCTURE_ERRORS, record_and_announce

log = logging.getLogger(__name__)

CONTEXT = web.AppKey("context", object)
CHUNK = 256 * 1024
FIELD_LIMIT = 1024
_NAME_RE = re.compile(r"^[A-Za-z0-9_.,-]{1,100}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_FIELDS = {"device_type", "target", "subtarget", "profile", "version", "revision",
           "image_type", "sha256"}


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@web.middleware
async def json_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except ApiError as exc:
        log.info("request refused", extra={"path": request.path, "status": exc.status,
                                           "error": exc.message})
        return web.json_response({"error": exc.message}, status=exc.status)
    except INFRASTRUCTURE_ERRORS as exc:
        log.error("request failed", extra={"path": request.path, "error": repr(exc)})
        return web.json_response({"error": "temporarily unavailable, try again"}, status=503,
                                 headers={"Retry-After": "30"})


async def authenticate(request: web.Request) -> str:
    """The name of the request's token of scope ``upload``; 401 / 403 with the reason."""
    try:
        return await authorize(request.app[CONTEXT].pool,
                               request.headers.get("Authorization", ""), "upload",
                               path=request.path)
    except TokenRefused as exc:
        raise ApiError(exc.status, exc.reason) from None


# -- uploads --------------------------------------------------------------------------


class SpooledFile(msgspec.Struct, frozen=True):
    name: str
    path: Path
    size: int
    sha256: str


class UploadForm(msgspec.Struct):
    fields: dict[str, str]
    files: list[SpooledFile]


def _check_file_name(filename: str, config: WebConfig) -> str:
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    if name != filename or not SAFE_FILE_NAME.match(name):
        raise ApiError(400, f"bad file name {filename!r}")
    if not any(name.endswith(ext) for ext in config.allowed_extensions):
        allowed = ", ".join(config.allowed_extensions)
        raise ApiError(415, f"{name}: not a firmware file type (allowed: {allowed})")
    return name


async def _read_field(part: BodyPartReader) -> str:
    data = bytearray()
    while chunk := await part.read_chunk(FIELD_LIMIT):
        data += chunk
        if len(data) > FIELD_LIMIT:
            raise ApiError(400, f"field {part.name} is too long")
    try:
        return data.decode().strip()
    except UnicodeDecodeError:
        raise ApiError(400, f"field {part.name} is not UTF-8") from None


async def read_upload(request: web.Request, config: WebConfig, spool: Path) -> UploadForm:
    """Stream the multipart body to ``spool``, hashing as it goes; never all in memory."""
    if not request.content_type.startswith("multipart/form-data"):
        raise ApiError(415, "send multipart/form-data")
    form = UploadForm(fields={}, files=[])
    total = 0
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise ApiError(400, "nested multipart is not supported")
        if part.filename is None:
            if part.name not in _FIELDS:
                raise ApiError(400, f"unknown field {part.name!r}")
            # Each field once: the form stays bounded however long the stream is.
            if part.name in form.fields:
                raise ApiError(400, f"field {part.name!r} sent twice")
            form.fields[part.name] = await _read_field(part)
            continue
        name = _check_file_name(part.filename, config)
        if any(f.name == name for f in form.files):
            raise ApiError(400, f"{name} sent twice")
        path = spool / name
        digest = hashlib.sha256()
        size = 0
        with path.open("wb") as out:
            while chunk := await part.read_chunk(CHUNK):
                size += len(chunk)
                total += len(chunk)
                if total > config.max_upload_bytes:
                    raise ApiError(413, f"upload is over {config.max_upload_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise ApiError(400, f"{name} is empty")
        form.files.append(SpooledFile(name, path, size, digest.hexdigest()))
    if not form.files:
        raise ApiError(400, "no firmware file in the upload")
    return form


def _device(fields: dict[str, str]) -> tuple[str, str, str | None]:
    if "device_type" in fields:
        parts = fields["device_type"].split("/")
        if len(parts) not in (2, 3):
            raise ApiError(400, "device_type must be target/subtarget[/profile]")
        target, subtarget, profile = parts[0], parts[1], parts[2] if len(parts) == 3 else None
    else:
        if "target" not in fields or "subtarget" not in fields:
            raise ApiError(400, "missing field: device_type, or target and subtarget")
        target, subtarget = fields["target"], fields["subtarget"]
        profile = fields.get("profile") or None
    for value in (target, subtarget, profile):
        if value is not None and not PROFILE_RE.match(value):
            raise ApiError(400, f"bad device name {value!r}")
    return target, subtarget, profile


def upload_firmware(form: UploadForm, submitter: str) -> FirmwareDiscoveredData:
    fields = form.fields
    target, subtarget, profile = _device(fields)
    expected = fields.get("sha256", "").lower()
    if expected and len(form.files) != 1:
        raise ApiError(400, "sha256 can only be checked for a single file")
    if expected and expected != form.files[0].sha256:
        raise ApiError(422, f"sha256 mismatch: sent {expected}, "
                            f"received {form.files[0].sha256}")
    firmware_id = upload_firmware_id([f.sha256 for f in form.files])
    images = []
    for file in form.files:
        detected_type, filesystem = classify(file.name)
        image_type = fields.get("image_type") or detected_type
        if image_type is None:
            raise ApiError(422, f"{file.name}: cannot tell the image type from the name; "
                                "name it like ...-squashfs-sysupgrade.bin or send image_type")
        images.append(Image(
            id=image_id(firmware_id, target, subtarget, profile, file.name),
            target=target, subtarget=subtarget, profile=profile, name=file.name,
            type=image_type, filesystem=filesystem, sha256=file.sha256, size=file.size,
            object_key=firmware_object_key(firmware_id, file.name),
        ))
    for value in (fields.get("version"), fields.get("revision")):
        if value is not None and not _NAME_RE.match(value):
            raise ApiError(400, f"bad version or revision {value!r}")
    return FirmwareDiscoveredData(
        firmware_id=firmware_id, source_kind=SourceKind.UPLOAD,
        priority_class=PriorityClass.CUSTOM, channel="custom",
        version=fields.get("version") or "custom", revision=fields.get("revision"),
        images=images, submitter=submitter,
    )


async def handle_upload(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    config: WebConfig = ctx.config.trigger.web
    submitter = await authenticate(request)
    if (request.content_length or 0) > config.max_upload_bytes + 64 * 1024:
        raise ApiError(413, f"upload is over {config.max_upload_bytes} bytes")
    with tempfile.TemporaryDirectory(prefix="wrtci-upload-", dir=config.spool_dir) as spool:
        form = await read_upload(request, config, Path(spool))
        data = upload_firmware(form, submitter)
        # Files first, record second: a recorded firmware always has its files.
        for file, image in zip(form.files, data.images, strict=True):
            await ctx.store.put_file(image.object_key, file.path)
    outcome = await record_and_announce(ctx.pool, ctx.publisher, data,
                                        event_id=discovered_event_id(data.firmware_id))
    return web.json_response(
        {"firmware_id": data.firmware_id, "created": outcome.recorded,
         "images": msgspec.to_builtins(data.images)},
        status=201 if outcome.recorded else 200,
    )


# -- buildbot ---------------------------------------------------------------------------


async def handle_buildbot(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    await authenticate(request)
    try:
        build = buildbot.decode(await request.read())
        if not build.succeeded:
            return web.json_response({"ignored": "build did not succeed"}, status=202)
        target = build.target
        scanner = ctx.official_scanner()
        versions = None
        try:
            doc = await scanner.fetcher.get(f"{scanner.base}/.versions.json", conditional=False)
            versions = decode_document(doc.body, VersionsIndex, doc.url)
        except (FetchError, BadDocument) as exc:
            log.warning("no release list for a buildbot build", extra={"error": str(exc)})
        release = buildbot.release_of(build, versions)
    except buildbot.BadNotification as exc:
        raise ApiError(422, str(exc)) from None
    url = f"{scanner.base}/{release.path}/targets/{target}/profiles.json"
    try:
        doc = await scanner.fetcher.get(url, conditional=False)
        index = decode_document(doc.body, ProfilesIndex, url)
    except NotFound:
        raise ApiError(409, f"{url} is not on the downloads server (yet)") from None
    except (FetchError, BadDocument) as exc:
        raise ApiError(502, str(exc)) from None
    if index.target != target or not buildbot.matches_revision(build, index.version_code):
        raise ApiError(409, f"{url} does not describe this build "
                            f"({index.target} {index.version_code})")
    try:
        outcome = await scanner.announce(index, release, SourceKind.BUILDBOT)
    except BadDocument as exc:
        raise ApiError(502, str(exc)) from None
    firmware_id = official_firmware_id(release.channel, index.version_number, index.version_code)
    log.info("buildbot build recorded", extra={"firmware_id": firmware_id, "target": target,
                                              "build_url": build.url})
    return web.json_response({"firmware_id": firmware_id, "created": outcome.recorded},
                             status=201 if outcome.recorded else 200)


async def handle_health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app(ctx) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=1024 * 1024)
    app[CONTEXT] = ctx
    app.router.add_post("/api/v1/firmware", handle_upload)
    app.router.add_post("/api/v1/buildbot", handle_buildbot)
    app.router.add_get("/healthz", handle_health)
    return app


async def start_web(ctx) -> web.AppRunner:
    config: WebConfig = ctx.config.trigger.web
    runner = web.AppRunner(make_app(ctx), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    log.info("listening", extra={"host": config.host, "port": config.port})
    return runner
