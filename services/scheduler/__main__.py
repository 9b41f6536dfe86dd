import sys

from wrtci.core.runtime import daemon_main
from wrtci.services.scheduler.service import Config, check, run

sys.exit(daemon_main("scheduler", Config, run, check))
