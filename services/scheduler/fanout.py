"""Which jobs a firmware gets: pure logic, no I/O.

A firmware's images x the device types labs have x the plans each device
type qualifies for. One job per device type carries all its plans, so a
device is flashed once; the job uses the one image of the firmware that fits
the device type best: the image of the type its devices boot (they announce
it, see ``ImageWish``), else the first in the preference order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence

import msgspec

from wrtci.proto.events import FirmwareDiscoveredData
from wrtci.proto.model import Image, TestPlan
from wrtci.services.scheduler.plans import PlanConfig, plans_for_device

MAX_JOB_ID = 200
"""Longer ids are shortened with a digest (they end up in subjects' headers and URLs)."""

DEFAULT_IMAGE_PREFERENCE = [
    "combined:squashfs", "combined-efi:squashfs", "combined:ext4", "combined-efi:ext4",
    "sysupgrade:squashfs", "kernel:initramfs", "sysupgrade", "factory", "combined",
    "combined-efi", "kernel",
]
"""``type[:filesystem]`` in order of preference; anything else comes after."""


class ImageWish(msgspec.Struct, frozen=True):
    """The image type (and filesystem) the devices of one device type boot."""

    type: str
    filesystem: str | None = None

    def __str__(self) -> str:
        return f"{self.type}:{self.filesystem}" if self.filesystem else self.type

    def met_by(self, image: Image) -> bool:
        return image.type == self.type and (
            not self.filesystem or not image.filesystem or image.filesystem == self.filesystem)


class JobDraft(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    device_type: str
    image: Image
    plans: list[TestPlan]
    priority: int
    timeout_s: float


def job_id(firmware_id: str, image: Image, device_type: str) -> str:
    """``<firmware>:<image name>:<device type>``, shortened past MAX_JOB_ID characters."""
    full = f"{firmware_id}:{image.name}:{device_type}"
    if len(full) <= MAX_JOB_ID:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:24]
    return f"{firmware_id[:MAX_JOB_ID - 26]}:{digest}"


def _image_rank(image: Image, preference: Sequence[str]) -> tuple[int, str]:
    keys = [f"{image.type}:{image.filesystem}" if image.filesystem else None, image.type]
    for index, wanted in enumerate(preference):
        if wanted in keys:
            return index, image.name
    return len(preference), image.name


def choose_image(images: Sequence[Image], wish: ImageWish | None,
                 preference: Sequence[str]) -> Image:
    """The image of the wished type (the wished filesystem first); else by preference."""
    def rank(image: Image) -> tuple[int, str]:
        return _image_rank(image, preference)

    if wish is not None:
        of_type = [i for i in images if i.type == wish.type]
        if of_type:
            exact = [i for i in of_type if wish.filesystem and i.filesystem == wish.filesystem]
            return min(exact or of_type, key=rank)
    return min(images, key=rank)


def _images_by_device_type(
    images: Iterable[Image], device_types: Iterable[str]
) -> dict[str, list[Image]]:
    """Device type -> the images that can run on it.

    An image naming a profile fits exactly that device type; one naming only
    target/subtarget (PR artifacts, uploads) fits every profile of the
    subtarget, unless a profile-specific image exists for it.
    """
    exact: dict[str, list[Image]] = {}
    generic: dict[str, list[Image]] = {}
    for image in images:
        if image.profile:
            exact.setdefault(f"{image.target}/{image.subtarget}/{image.profile}", []).append(image)
        else:
            generic.setdefault(f"{image.target}/{image.subtarget}", []).append(image)
    fits: dict[str, list[Image]] = {}
    for device_type in device_types:
        if device_type in exact:
            fits[device_type] = exact[device_type]
            continue
        target_subtarget = device_type.rsplit("/", 1)[0]
        if target_subtarget in generic:
            fits[device_type] = generic[target_subtarget]
    return fits


def plan_jobs(
    firmware: FirmwareDiscoveredData,
    device_types: Mapping[str, frozenset[str]],
    plans: Sequence[PlanConfig],
    *,
    overhead_s: float,
    image_preference: Sequence[str] = DEFAULT_IMAGE_PREFERENCE,
    image_wishes: Mapping[str, ImageWish] | None = None,
) -> list[JobDraft]:
    """The jobs of ``firmware`` for ``device_types`` (device type -> features).

    ``image_wishes``: device type -> the image type its devices boot (absent
    when they name none, or disagree); see :func:`choose_image`.
    """
    wishes = image_wishes or {}
    priority = int(firmware.priority_class.priority)
    drafts = []
    fits = _images_by_device_type(firmware.images, device_types)
    by_features: dict[frozenset[str], list[TestPlan]] = {}  # a few feature sets, 1,000s of types
    for device_type in sorted(fits):
        features = device_types[device_type]
        device_plans = by_features.get(features)
        if device_plans is None:
            device_plans = by_features[features] = plans_for_device(plans, features)
        if not device_plans:
            continue
        image = choose_image(fits[device_type], wishes.get(device_type), image_preference)
        drafts.append(JobDraft(
            job_id=job_id(firmware.firmware_id, image, device_type),
            device_type=device_type,
            image=image,
            plans=device_plans,
            priority=priority,
            timeout_s=overhead_s + sum(p.timeout_s for p in device_plans),
        ))
    return drafts


FIRST_SLICE = 100
SLICE = 250


def slices(drafts: Sequence[JobDraft], first: int = FIRST_SLICE,
           size: int = SLICE) -> Iterator[Sequence[JobDraft]]:
    """The jobs in slices for a pipelined fan-out: a small first one (the first
    jobs go out early), then ``size`` at a time."""
    start, end = 0, first
    while start < len(drafts):
        yield drafts[start:end]
        start, end = end, end + size
