"""The wake-up signal of the job queue: what central services send, what a lab reads.

Once jobs are stored on the JOBS stream, the labs with devices of their type
hear one core NATS message per (priority, device type) on
``Subjects.job_wake``, whose payload is the number of jobs it stands for (a
batch of a firmware's fan-out wakes each lab once). ``wrtci resume`` sends
wake-ups without a count: they stand for one job, and the lab's devices look
until a look finds nothing (:mod:`wrtci.proto.jobqueue`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from nats.aio.client import Client

from wrtci.proto.subjects import Priority, Subjects

MAX_ANNOUNCED = 100_000
"""Bound of the jobs a lab keeps count of, per priority and device type."""


async def wake_labs(nc: Client, subjects: Subjects,
                    queued: Iterable[tuple[Priority | int, str]]) -> int:
    """Wake the labs for jobs just queued (one item per job): one wake-up per
    (priority, device type), which says how many jobs it stands for.

    Called once the jobs are stored (their publishes acked). Returns how many
    wake-ups were sent.
    """
    wakes = Counter((int(priority), device_type) for priority, device_type in queued)
    for (priority, device_type), jobs in sorted(wakes.items()):
        await nc.publish(subjects.job_wake(priority, device_type), str(jobs).encode())
    return len(wakes)


def jobs_announced(payload: bytes, before: int = 0) -> int:
    """``before`` plus the jobs a wake-up's payload stands for (one when it says none,
    or nothing readable), within :data:`MAX_ANNOUNCED`."""
    try:
        jobs = max(1, int(payload or b"1"))
    except ValueError:
        jobs = 1
    return min(before + jobs, MAX_ANNOUNCED)
