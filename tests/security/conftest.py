"""Lab isolation (generated NATS credentials, identity checks) and API tokens.

The servers and the lab and GitHub fixtures come from tests/conftest.py."""
