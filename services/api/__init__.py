"""The api service: the REST API (``/api/v1``) and the web pages people read results on.

- ``rest.py``: JSON read endpoints; ``control.py``: retry / cancel (token);
- ``pages.py``: server-rendered HTML (``html.py`` escapes every value);
- ``queries.py``: the reads from PostgreSQL; ``logs.py``: logs streamed from S3;
- ``service.py``: ``run`` / ``check``.
"""

from __future__ import annotations

from wrtci.services.api.config import Config
from wrtci.services.api.service import check, run

__all__ = ["Config", "check", "run"]
