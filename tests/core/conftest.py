"""The shared pieces: config, messages, consuming, topology, the CLI's events.

The servers and the lab and GitHub fixtures come from tests/conftest.py."""
