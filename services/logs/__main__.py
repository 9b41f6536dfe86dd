import sys

from services.logs import Config, check, run
from services.runtime import daemon_main

sys.exit(daemon_main("logs", Config, run, check))
