"""The central daemons: name -> module with ``Config``, ``run`` and ``check``.

``wrtci run NAME`` and ``wrtci up`` start them from here; each is also
``python -m services.NAME``. Issues that add a service add it here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

SERVICES: dict[str, str] = {
    "trigger": "wrtci.services.trigger.service",
    "scheduler": "wrtci.services.scheduler.service",
    "timeout": "wrtci.services.timeout.service",
    "logs": "wrtci.services.logs",
    "results": "wrtci.services.results",
    "api": "wrtci.services.api",
    "notifier": "wrtci.services.notifier",
}


def load(name: str) -> ModuleType:
    try:
        module_path = SERVICES[name]
    except KeyError:
        known = ", ".join(SERVICES) or "none"
        raise KeyError(f"unknown service {name!r}; known: {known}") from None
    return importlib.import_module(module_path)
