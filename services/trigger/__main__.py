import sys

from core.runtime import daemon_main
from services.trigger.service import Config, check, run

sys.exit(daemon_main("trigger", Config, run, check))
