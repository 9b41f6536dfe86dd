import sys

from core.runtime import daemon_main
from services.notifier import Config, check, run

if __name__ == "__main__":
    sys.exit(daemon_main("notifier", Config, run, check))
