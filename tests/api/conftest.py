"""The web pages, the REST and dashboard APIs, the live log, in a real browser too.

The servers and the lab and GitHub fixtures come from tests/conftest.py."""
