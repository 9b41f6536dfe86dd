"""Boot a QEMU target to its shell, then make its SSH reachable from the host.

The same job as openwrt-tests' QEMUNetworkStrategy: after the console shell,
wait until the device reports its LAN address over ubus (with the suite's own
``ubus_call``, imported from conftest as in openwrt-tests, so this file loads
only where the suite's tests directory is importable), then point the target's
NetworkService at it: through a QEMU user-network port forward on loopback, or
directly when QEMU has a real network.
"""

import enum
import time

import attr
from conftest import ubus_call
from labgrid import step, target_factory
from labgrid.strategy import Strategy, StrategyError
from labgrid.util import get_free_port

LAN_ADDRESS = "192.168.1.1"
LAN_WAIT_S = 60


class Status(enum.Enum):
    unknown = 0
    off = 1
    shell = 2


@target_factory.reg_driver
@attr.s(eq=False)
class QEMUNetworkStrategy(Strategy):
    bindings = {
        "qemu": "QEMUDriver",
        "shell": "ShellDriver",
        "ssh": "SSHDriver",
    }

    status = attr.ib(default=Status.unknown)

    def __attrs_post_init__(self):
        super().__attrs_post_init__()
        self._forward = None
        self._ssh_port = self.ssh.networkservice.port

    def _lan_is_up(self):
        status = ubus_call(self.shell, "network.interface.lan", "status")
        return bool(status.get("ipv4-address"))

    @step()
    def update_network_service(self):
        self.shell.run_check("ubus -t 30 wait_for network.interface.lan")
        deadline = time.monotonic() + LAN_WAIT_S
        while not self._lan_is_up():
            if time.monotonic() > deadline:
                raise StrategyError(f"lan has no IPv4 address after {LAN_WAIT_S} s")
            time.sleep(1)

        service = self.ssh.networkservice
        self.target.deactivate(self.ssh)
        if "user" not in self.qemu.nic.split(","):
            service.address, service.port = LAN_ADDRESS, self._ssh_port
            return
        if self._forward is not None:
            self.qemu.remove_port_forward(*self._forward)
        port = get_free_port()
        self.qemu.add_port_forward("tcp", "127.0.0.1", port, LAN_ADDRESS, self._ssh_port, "lan")
        self._forward = ("tcp", "127.0.0.1", port)
        service.address, service.port = "127.0.0.1", port

    @step(args=["state"])
    def transition(self, state, *, step):
        if not isinstance(state, Status):
            state = Status[state]
        if state == Status.unknown:
            raise StrategyError(f"can not transition to {state}")
        if self.status == state:
            step.skip("nothing to do")
            return
        if state == Status.off:
            self.target.activate(self.qemu)
            self.qemu.off()
            self._forward = None
        elif state == Status.shell:
            self.target.activate(self.qemu)
            self.qemu.on()
            self.target.activate(self.shell)
            self.update_network_service()
        self.status = state
