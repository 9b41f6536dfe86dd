"""Local servers that speak the protocols of the external services wrtci talks to."""
