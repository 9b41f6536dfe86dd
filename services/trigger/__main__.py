import sys

from wrtci.core.runtime import daemon_main
from wrtci.services.trigger.service import Config, check, run

sys.exit(daemon_main("trigger", Config, run, check))
