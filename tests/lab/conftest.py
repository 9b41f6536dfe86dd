"""The lab daemon: devices, the suite and its environment, jobs, places, labnet.

The servers and the lab and GitHub fixtures come from tests/conftest.py."""
