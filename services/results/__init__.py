"""The results service: the only writer of results into PostgreSQL.

- ingestion of the labs' (and the timeout service's) job and device events,
  a fetched batch per transaction (``store.py``, rules in ``ingest.py``);
- analysis after commit, from the ``results_work`` outbox: regressions and
  flaky tests (``history.py``), console-log signatures (``signatures.py``);
- KCIDB: the optional kcidb-ng forwarder (the export itself is ``services.kcidb``)
  (``forwarder.py``); the firmware summary used by the API and notifier
  (``summary.py``).
"""

from __future__ import annotations

from wrtci.services.results.service import Config, check, run

__all__ = ["Config", "check", "run"]
