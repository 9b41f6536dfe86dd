import sys

from wrtci.core.runtime import daemon_main
from wrtci.services.logs import Config, check, run

sys.exit(daemon_main("logs", Config, run, check))
