import sys

from wrtci.core.runtime import daemon_main
from wrtci.services.results import Config, check, run

if __name__ == "__main__":
    sys.exit(daemon_main("results", Config, run, check))
