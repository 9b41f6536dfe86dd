"""What the central services and the lab daemon share: config loading, logging,
the NATS connection and the daemon lifecycle. It imports only proto and
third-party libraries that every install has (msgspec, nats-py)."""
