import sys

from core.runtime import daemon_main
from services.timeout.service import Config, check, run

sys.exit(daemon_main("timeout", Config, run, check))
