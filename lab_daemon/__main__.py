import sys

from lab_daemon.cli import main

sys.exit(main())
