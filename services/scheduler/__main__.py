import sys

from core.runtime import daemon_main
from services.scheduler.service import Config, check, run

sys.exit(daemon_main("scheduler", Config, run, check))
