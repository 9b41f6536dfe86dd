"""Firmware sources: the downloads server, GitHub PRs, uploads, buildbot.

The servers and the lab and GitHub fixtures come from tests/conftest.py."""
