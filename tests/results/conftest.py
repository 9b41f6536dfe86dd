"""Results ingestion, history, log analysis and KCIDB.

The servers and the lab and GitHub fixtures come from tests/conftest.py."""
