"""Firmware from GitHub pull requests that carry the trigger label.

For every open PR with the label (``ci-test-requested`` by default): the
newest successful build workflow run for the PR's head commit, its artifacts
named ``openwrt-<target>-<subtarget>...``, downloaded (zip), unpacked without
trusting them (``artifacts``), the images stored in object storage, and the
firmware ``wrtci:pr:<repo>#<n>:<head sha>`` recorded and announced. A new push
is a new head sha, hence a new firmware; a PR without the label is not looked
at. A head already announced costs one database lookup per poll, no download.
The previous head's firmware, and the firmware of a PR that lost the label or
was closed, is cancelled if not yet done (``pr_cancel``).

GitHub's REST API: ``GET /repos/{repo}/pulls`` (and ``.../pulls/{n}`` for a PR
with firmware that left the open list), ``.../actions/runs`` (or
``.../actions/workflows/{workflow}/runs``), ``.../actions/runs/{id}/artifacts``
and the artifact's ``archive_download_url`` (a redirect to blob storage;
aiohttp drops the Authorization header on a redirect to another host).
Rate limiting (403/429 with ``X-RateLimit-Remaining: 0`` or ``Retry-After``)
pauses the source until the reset time; 5xx and malformed answers skip the
PR until the next poll.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path

import msgspec

from wrtci.proto.events import FirmwareDiscoveredData
from wrtci.proto.model import Image, PullRequest, SourceKind
from wrtci.proto.storage import firmware_object_key
from wrtci.proto.subjects import PriorityClass
from wrtci.services.github import GithubClient, GithubError, RateLimited, ResponseTooLarge
from wrtci.services.trigger.artifacts import ArtifactRejected, Unpacked, UnpackLimits, unpack
from wrtci.services.trigger.config import GithubConfig
from wrtci.services.trigger.images import (
    PROFILE_RE,
    classify,
    discovered_event_id,
    guess_profile,
    image_id,
    pr_firmware_id,
)
from wrtci.services.trigger.official import TARGET_RE, ProfilesIndex
from wrtci.services.trigger.pr_cancel import PrNow, open_pr_firmware, to_cancel
from wrtci.services.trigger.record import (
    INFRASTRUCTURE_ERRORS,
    is_announced,
    publish_once,
    record_and_announce,
)

log = logging.getLogger(__name__)


# -- the API's shapes (only what is read) ---------------------------------------------


class Label(msgspec.Struct, frozen=True):
    name: str


class Repo(msgspec.Struct, frozen=True):
    full_name: str | None = None
    clone_url: str | None = None


class Head(msgspec.Struct, frozen=True):
    sha: str
    ref: str = ""
    repo: Repo | None = None


class User(msgspec.Struct, frozen=True):
    login: str = ""


class Pull(msgspec.Struct, frozen=True):
    number: int
    html_url: str
    head: Head
    title: str = ""
    labels: list[Label] = []
    user: User | None = None
    state: str = "open"


class Run(msgspec.Struct, frozen=True):
    id: int
    head_sha: str
    conclusion: str | None = None
    created_at: str = ""


class Runs(msgspec.Struct, frozen=True):
    workflow_runs: list[Run] = []


class ArtifactInfo(msgspec.Struct, frozen=True):
    id: int
    name: str
    archive_download_url: str
    size_in_bytes: int = 0
    expired: bool = False


class Artifacts(msgspec.Struct, frozen=True):
    artifacts: list[ArtifactInfo] = []


# -- the source ---------------------------------------------------------------------------


class PollReport(msgspec.Struct):
    labelled: int = 0
    announced: int = 0
    waiting: int = 0
    """Labelled PRs with no successful build (or no artifacts) yet."""
    skipped: int = 0
    cancelled: int = 0
    """Cancel requests published for firmware of superseded, unlabelled or closed PRs."""
    rate_limited: bool = False


class PullRequestSource:
    def __init__(self, config: GithubConfig, ctx) -> None:
        self.config = config
        self.ctx = ctx
        self.client = GithubClient(ctx.session, api_url=config.api_url, token=config.token,
                                   timeout_s=config.timeout_s)
        self.repo = config.repository
        self.paused_until = 0.0
        self.limits = UnpackLimits(max_total=config.max_unpacked_bytes,
                                   max_members=config.max_members, max_ratio=config.max_ratio)
        self.rejected: set[str] = set()
        """Heads whose artifacts were refused: not downloaded again by this process."""

    async def poll_once(self) -> PollReport:
        report = PollReport()
        if time.time() < self.paused_until:
            report.rate_limited = True
            return report
        try:
            pages = await self.client.all_pages(
                f"/repos/{self.repo}/pulls", {"state": "open", "per_page": 100}, list[Pull])
            pulls = [p for page in pages for p in page]
            # Stop what is obsolete before downloading what is new: frees the devices.
            await self._cancel_obsolete(pulls, report)
            for pull in pulls:
                if self._labelled(pull):
                    report.labelled += 1
                    await self._one(pull, report)
        except RateLimited as exc:
            self.paused_until = exc.reset_at
            report.rate_limited = True
            log.warning("GitHub rate limit: paused", extra={"until": exc.reset_at})
        except GithubError as exc:
            report.skipped += 1
            log.warning("cannot list pull requests, retried next poll",
                        extra={"error": str(exc)})
        log.info("github poll done", extra=msgspec.to_builtins(report))
        return report

    def _labelled(self, pull: Pull) -> bool:
        return any(label.name == self.config.label for label in pull.labels)

    async def _cancel_obsolete(self, pulls: list[Pull], report: PollReport) -> None:
        """Cancel the firmware of PRs pushed to again, unlabelled, closed or merged.

        Which PRs had firmware comes from the database (see ``pr_cancel``). A
        PR with such firmware that the open list lacks is asked for on its own:
        closed, or opened while the list was paged through.
        """
        try:
            firmware = await open_pr_firmware(self.ctx.pool, self.repo)
        except INFRASTRUCTURE_ERRORS as exc:
            log.error("cannot read pull request firmware, retried next poll",
                      extra={"error": repr(exc)})
            return
        now = {p.number: PrNow(p.head.sha, self._labelled(p)) for p in pulls}
        for number in sorted({fw.number for fw in firmware} - now.keys()):
            try:
                pull, _ = await self.client.get(f"/repos/{self.repo}/pulls/{number}", {}, Pull)
            except RateLimited:
                raise
            except GithubError as exc:
                log.warning("cannot look up pull request, retried next poll",
                            extra={"pr": number, "error": str(exc)})
                continue
            now[number] = PrNow(pull.head.sha, self._labelled(pull), open=pull.state == "open")
        for request in to_cancel(firmware, now):
            ids = {"firmware_id": request.firmware_id, "event_id": request.event_id,
                   "reason": request.reason}
            try:
                published = await publish_once(self.ctx.pool, self.ctx.publisher,
                                               request.event(), request.firmware_id)
            except INFRASTRUCTURE_ERRORS as exc:
                log.error("cannot request cancel, retried next poll",
                          extra={**ids, "error": repr(exc)})
                continue
            if published:
                report.cancelled += 1
                log.info("pull request firmware cancel requested", extra=ids)

    async def _one(self, pull: Pull, report: PollReport) -> None:
        firmware_id = pr_firmware_id(self.repo, pull.number, pull.head.sha)
        ids = {"firmware_id": firmware_id, "pr": pull.number}
        if firmware_id in self.rejected or await is_announced(
                self.ctx.pool, discovered_event_id(firmware_id)):
            return
        try:
            data = await self._firmware(pull, firmware_id)
        except ArtifactRejected as exc:
            self.rejected.add(firmware_id)
            report.skipped += 1
            log.warning("artifact refused", extra={**ids, "error": str(exc)})
            return
        except RateLimited:
            raise
        except GithubError as exc:
            report.skipped += 1
            log.warning("skipped pull request, retried next poll",
                        extra={**ids, "error": str(exc)})
            return
        except INFRASTRUCTURE_ERRORS as exc:
            report.skipped += 1
            log.error("cannot store firmware, retried next poll", extra={**ids, "error": repr(exc)})
            return
        if data is None:
            report.waiting += 1
            return
        try:
            outcome = await record_and_announce(self.ctx.pool, self.ctx.publisher, data,
                                                event_id=discovered_event_id(firmware_id))
        except INFRASTRUCTURE_ERRORS as exc:
            report.skipped += 1
            log.error("cannot record, retried next poll", extra={**ids, "error": repr(exc)})
            return
        if outcome.published:
            report.announced += 1

    async def _newest_successful_run(self, sha: str) -> Run | None:
        path = (f"/repos/{self.repo}/actions/workflows/{self.config.workflow}/runs"
                if self.config.workflow else f"/repos/{self.repo}/actions/runs")
        runs, _ = await self.client.get(
            path, {"head_sha": sha, "status": "success", "per_page": 100}, Runs)
        good = [r for r in runs.workflow_runs if r.head_sha == sha and r.conclusion == "success"]
        return max(good, key=lambda r: (r.created_at, r.id), default=None)

    async def _firmware(self, pull: Pull, firmware_id: str) -> FirmwareDiscoveredData | None:
        run = await self._newest_successful_run(pull.head.sha)
        if run is None:
            log.info("no successful build yet", extra={"pr": pull.number})
            return None
        pages = await self.client.all_pages(
            f"/repos/{self.repo}/actions/runs/{run.id}/artifacts", {"per_page": 100}, Artifacts)
        wanted = [a for page in pages for a in page.artifacts
                  if a.name.startswith(self.config.artifact_prefix) and not a.expired]
        if not wanted:
            log.info("build has no firmware artifacts", extra={"pr": pull.number, "run": run.id})
            return None
        with tempfile.TemporaryDirectory(prefix="wrtci-pr-") as tmp:
            unpacked = []
            for artifact in wanted:
                unpacked.append(await self._unpack(artifact, Path(tmp)))
            # Everything unpacked and checked before anything is stored or recorded.
            images = []
            for (target, subtarget), files, profiles in unpacked:
                for file in files:
                    image = self._image(firmware_id, target, subtarget, file, profiles)
                    if image is not None:
                        await self.ctx.store.put_file(image.object_key, file.path)
                        images.append(image)
        if not images:
            raise ArtifactRejected("the artifacts hold no firmware image")
        head_repo = pull.head.repo
        return FirmwareDiscoveredData(
            firmware_id=firmware_id, source_kind=SourceKind.GITHUB_PR,
            priority_class=PriorityClass.PR, channel="pr", version=f"pr-{pull.number}",
            images=images,
            git_repository_url=head_repo.clone_url if head_repo else None,
            git_commit_hash=pull.head.sha, git_branch=pull.head.ref or None,
            pull_request=PullRequest(repository=self.repo, number=pull.number,
                                     head_sha=pull.head.sha, url=pull.html_url,
                                     title=pull.title,
                                     author=pull.user.login if pull.user else ""),
            submitter=pull.user.login if pull.user else None, url=pull.html_url,
        )

    def _target_of(self, artifact: ArtifactInfo) -> tuple[str, str]:
        # The PR's own workflow names its artifacts: nothing here is trusted.
        parts = artifact.name[len(self.config.artifact_prefix):].split("-")
        if len(parts) < 2 or not TARGET_RE.match(f"{parts[0]}/{parts[1]}"):
            raise ArtifactRejected(f"artifact name {artifact.name!r} names no target/subtarget")
        return parts[0], parts[1]

    async def _unpack(self, artifact: ArtifactInfo, tmp: Path):
        target = self._target_of(artifact)
        if artifact.size_in_bytes > self.config.max_artifact_bytes:
            raise ArtifactRejected(f"{artifact.name} is {artifact.size_in_bytes} bytes")
        zip_path = tmp / f"{artifact.id}.zip"
        try:
            await self.client.download(artifact.archive_download_url, zip_path,
                                       self.config.max_artifact_bytes)
        except ResponseTooLarge as exc:
            raise ArtifactRejected(f"artifact is over {self.config.max_artifact_bytes} bytes") \
                from exc
        files, profiles_raw = await asyncio.to_thread(
            unpack, zip_path, tmp / str(artifact.id), self.limits,
            lambda name: classify(name)[0] is not None)
        zip_path.unlink()
        profiles = None
        if profiles_raw is not None:
            try:
                profiles = msgspec.json.decode(profiles_raw, type=ProfilesIndex)
            except msgspec.DecodeError:
                log.info("ignored unreadable profiles.json", extra={"artifact": artifact.name})
        return target, files, profiles

    @staticmethod
    def _image(firmware_id: str, target: str, subtarget: str, file: Unpacked,
               profiles: ProfilesIndex | None) -> Image | None:
        image_type, filesystem = classify(file.name)
        profile = guess_profile(file.name, target, subtarget)
        if profile is not None and not PROFILE_RE.match(profile):
            profile = None  # only a guess from the name
        if profiles is not None:
            for name, entry in profiles.profiles.items():
                listed = next((i for i in entry.images if i.name == file.name), None)
                if listed is not None:
                    profile, image_type = name, listed.type
                    filesystem = listed.filesystem or filesystem
                    break
        if image_type is None:
            return None
        if profile is not None and not PROFILE_RE.match(profile):
            raise ArtifactRejected(f"{file.name}: bad profile name {profile!r}")
        return Image(
            id=image_id(firmware_id, target, subtarget, profile, file.name),
            target=target, subtarget=subtarget, profile=profile, name=file.name,
            type=image_type, filesystem=filesystem, sha256=file.sha256, size=file.size,
            object_key=firmware_object_key(firmware_id, file.name),
        )
