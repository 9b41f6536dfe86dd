import sys

from wrtci.lab_daemon.cli import main

sys.exit(main())
