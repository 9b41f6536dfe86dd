"""The life of firmware and jobs, shared by the scheduler and the timeout service.

``machine.Lifecycle`` applies the transitions to the database, ``rules`` holds
the pure decisions, ``dispatch`` publishes jobs, ``store`` is the SQL, ``app``
the daemons' common start. No service package imports another: both daemons
import this one.
"""

from wrtci.services.lifecycle.machine import Lifecycle
from wrtci.services.lifecycle.rules import INFRA_RETRY, Transition, decide_firmware, state_event_id

__all__ = ["INFRA_RETRY", "Lifecycle", "Transition", "decide_firmware", "state_event_id"]
