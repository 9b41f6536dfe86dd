"""The central daemons: name -> module with ``Config``, ``run`` and ``check``.

``wrtci run NAME`` and ``wrtci up`` start them from here; each is also
``python -m services.NAME``. Issues that add a service add it here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

SERVICES: dict[str, str] = {
    "trigger": "services.trigger.service",
    "scheduler": "services.scheduler.service",
    "timeout": "services.timeout.service",
    "logs": "services.logs",
    "results": "services.results",
    "api": "services.api",
    "notifier": "services.notifier",
}


def load(name: str) -> ModuleType:
    try:
        module_path = SERVICES[name]
    except KeyError:
        known = ", ".join(SERVICES) or "none"
        raise KeyError(f"unknown service {name!r}; known: {known}") from None
    return importlib.import_module(module_path)
