"""Mail, GitHub reports and device-health issues.

The servers and the lab and GitHub fixtures come from tests/conftest.py."""
