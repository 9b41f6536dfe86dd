import sys

from core.runtime import daemon_main
from services.results import Config, check, run

if __name__ == "__main__":
    sys.exit(daemon_main("results", Config, run, check))
