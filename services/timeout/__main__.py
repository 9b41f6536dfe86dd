import sys

from wrtci.core.runtime import daemon_main
from wrtci.services.timeout.service import Config, check, run

sys.exit(daemon_main("timeout", Config, run, check))
