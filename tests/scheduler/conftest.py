"""Scheduling, the firmware lifecycle, timeouts, retries and drain.

The servers and the lab and GitHub fixtures come from tests/conftest.py."""
