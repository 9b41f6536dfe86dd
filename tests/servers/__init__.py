"""Local servers speaking the protocols of external services, for tests."""
