"""The whole system: wrtci up, the demo, outages, the cluster, deploy units.

The servers and the lab and GitHub fixtures come from tests/conftest.py."""
