import sys

from wrtci.core.runtime import daemon_main
from wrtci.services.api import Config, check, run

if __name__ == "__main__":
    sys.exit(daemon_main("api", Config, run, check))
