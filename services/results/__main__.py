import sys

from services.results import Config, check, run
from services.runtime import daemon_main

if __name__ == "__main__":
    sys.exit(daemon_main("results", Config, run, check))
