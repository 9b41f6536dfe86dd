"""wrtci: CI for OpenWrt firmware on labgrid devices.

The import packages live in the top-level folders core/, proto/, services/ and
lab_daemon/; pyproject.toml installs them as wrtci.core, wrtci.proto,
wrtci.services and wrtci.lab_daemon (see docs/architecture.md)."""
