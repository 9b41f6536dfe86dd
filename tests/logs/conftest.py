"""The log writer: chunks to complete stored logs, within memory bounds.

The servers and the lab and GitHub fixtures come from tests/conftest.py."""
