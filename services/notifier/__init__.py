"""The notifier: results reach people by mail and on GitHub when a firmware is done.

- ``service``: the consumer of ``firmware.state`` and the order of things;
- ``facts``: what a report says, read from the database (the results
  service's ``firmware_summary`` plus incident log lines and job logs);
- ``report``: the texts (mail, PR comment, commit status), pure functions;
- ``delivery`` / ``store``: once per (firmware, round, channel), with retries;
- ``mail`` (SMTP) and ``github`` (REST) talk to the outside.
"""

from __future__ import annotations

from wrtci.services.notifier.config import Config
from wrtci.services.notifier.service import check, run

__all__ = ["Config", "check", "run"]
