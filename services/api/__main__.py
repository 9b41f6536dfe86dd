import sys

from services.api import Config, check, run
from services.runtime import daemon_main

if __name__ == "__main__":
    sys.exit(daemon_main("api", Config, run, check))
