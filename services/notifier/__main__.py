import sys

from services.notifier import Config, check, run
from services.runtime import daemon_main

if __name__ == "__main__":
    sys.exit(daemon_main("notifier", Config, run, check))
