import sys

from core.runtime import daemon_main
from services.logs import Config, check, run

sys.exit(daemon_main("logs", Config, run, check))
