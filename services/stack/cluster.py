"""A JetStream cluster of nats-server processes on loopback (tests, local trials).

Each node is a :class:`~services.stack.servers.NatsServer` with a cluster
block in its configuration file; the nodes route to each other and elect a
meta leader, and streams and KV buckets can then be placed at up to ``size``
replicas (``wrtci nats apply --replicas 3``). A node can be killed (SIGKILL,
as a crashed machine) and started again on the same store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from wrtci.services.stack.servers import (
    LOOPBACK,
    NatsServer,
    ServerError,
    _http_ok,
    free_port,
)


class ClusterNode(NatsServer):
    """One node: its own ports, store and configuration file."""

    def __init__(self, root: Path, index: int, cluster_name: str,
                 route_ports: list[int]) -> None:
        directory = Path(root) / f"n{index}"
        super().__init__(directory / "store", config_file=directory / "node.conf")
        self.index = index
        self.node_name = self.server_name = f"n{index}"
        self.name = f"nats-server {self.node_name}"
        routes = ", ".join(f"nats-route://{LOOPBACK}:{port}" for port in route_ports)
        directory.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(  # type: ignore[union-attr]
            f"cluster {{ name: {cluster_name}, listen: {LOOPBACK}:{route_ports[index]}, "
            f"routes: [{routes}] }}\n")

    def _ready_checks(self) -> Sequence[Callable[[], bool]]:
        """None: JetStream needs a quorum of the nodes (see :meth:`NatsCluster.start`)."""
        return ()

    def healthy(self) -> bool:
        """Answering, with JetStream ready (the node has found its cluster)."""
        return self.running and _http_ok(f"{self.monitor_url}/healthz")

    def kill(self) -> None:
        """SIGKILL: no goodbye to the other nodes, as a machine that died."""
        if self.proc is not None and self.running:
            self.proc.kill()
            self.proc.wait(10)


class NatsCluster:
    """``size`` nodes on loopback; ``urls`` lists them for a client's server pool."""

    def __init__(self, root: Path, size: int = 3, name: str = "wrtci") -> None:
        route_ports = [free_port() for _ in range(size)]
        self.nodes = [ClusterNode(root, i, name, route_ports) for i in range(size)]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self, timeout: float = 60.0) -> NatsCluster:
        for node in self.nodes:
            node.start()
        deadline = time.monotonic() + timeout
        while not all(node.healthy() for node in self.nodes):
            for node in self.nodes:
                if not node.running:
                    raise ServerError(f"{node.name} exited during start-up "
                                      f"(see {node.log_path})")
            if time.monotonic() > deadline:
                raise ServerError(f"the cluster not healthy after {timeout:.0f} s")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
