#!/usr/bin/env python3
"""Where the virtual firmware's boot time goes, under TCG as labgrid runs it.

usage: boot-time.py IMAGE [--runs N] [--trace]

Boots a copy of IMAGE with the QEMU command line labgrid's QEMUDriver builds
from openwrt-tests' targets/qemu-x86-64.yaml (machine pc, cpu max, 128M,
virtio disk, LAN and WAN NICs on user networking, -nographic) until "Please
press Enter to activate this console.", and prints for each run the console
lines with the seconds since QEMU started, the wall time to the prompt and
the CPU time QEMU used (user + system: the work, whatever else loads the
machine; wall time on a shared machine varies a lot, CPU time much less).

--trace boots with the kernel's boot messages and initcall timing instead of
``quiet`` (written into a copy of the image's syslinux.cfg), then runs
``dmesg`` on the console and prints the slowest initcalls and the longest
gaps between kernel messages. The trace itself slows the boot (the serial
console is slow under TCG): use it to find the slow parts, not to time them.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = b"Please press Enter to activate this console."
BOOT_PARTITION_OFFSET = 1024 * 1024  # build-firmware.sh: partition 1 starts at 1 MiB


def qemu_command(image: Path) -> list[str]:
    return [
        "qemu-system-x86_64",
        "-device", "virtio-rng-pci", "-netdev", "user,id=wan",
        "-device", "virtio-net-pci,netdev=wan",
        "-machine", "pc", "-cpu", "max", "-m", "128M", "-nographic",
        "-drive", f"if=virtio,format=raw,file={image}",
        "-nic", "user,model=virtio-net-pci,net=192.168.1.0/24,id=lan",
    ]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def boot(image: Path, commands: list[str], timeout_s: float = 180.0) -> tuple[float, float, str]:
    """Boot to the console prompt (then run ``commands``); wall s, CPU s, console text."""
    proc = subprocess.Popen(qemu_command(image), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    started = time.monotonic()
    output, wall, cpu = b"", 0.0, 0.0
    line_start = 0
    try:
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if not ready:
                continue
            data = os.read(proc.stdout.fileno(), 65536)
            if not data:
                break
            output += data
            if not wall:
                while (end := output.find(b"\n", line_start)) >= 0:
                    line = output[line_start:end].decode(errors="replace").strip()
                    if line:
                        print(f"{time.monotonic() - started:7.2f}  {line[:110]}")
                    line_start = end + 1
            if not wall and PROMPT in output:
                wall, cpu = time.monotonic() - started, cpu_seconds(proc.pid)
                if not commands:
                    break
                proc.stdin.write(b"\n" + b"".join(c.encode() + b"\n" for c in commands)
                                 + b"echo BOOT-TIME-DONE\n")
                proc.stdin.flush()
                deadline = time.monotonic() + 60
            if wall and commands and output.count(b"BOOT-TIME-DONE") >= 2:
                break
    finally:
        proc.kill()
        proc.wait()
    if not wall:
        sys.exit(f"no console prompt within {timeout_s:.0f} s")
    return wall, cpu, output.decode(errors="replace")


def traced_copy(image: Path, dest: Path) -> None:
    """``dest``: ``image`` with the kernel's messages and initcall timing turned on."""
    shutil.copyfile(image, dest)
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    where = f"{dest}@@{BOOT_PARTITION_OFFSET}"
    config = subprocess.run(["mtype", "-i", where, "::syslinux.cfg"], env=env, check=True,
                            capture_output=True, text=True).stdout
    config = config.replace(" quiet", " loglevel=1 initcall_debug")
    cfg = dest.with_suffix(".cfg")
    cfg.write_text(config)
    subprocess.run(["mcopy", "-o", "-i", where, str(cfg), "::syslinux.cfg"], env=env, check=True)


def report_trace(console: str) -> None:
    messages = re.findall(r"^\[\s*(\d+\.\d+)\] (.*?)\r?$", console, re.MULTILINE)
    slow = sorted(((int(m.group(2)), m.group(1)) for _, text in messages
                   if (m := re.match(r"initcall (\S+) returned \S+ after (\d+) usecs", text))),
                  reverse=True)
    print("\nslowest initcalls (ms):")
    for usecs, name in slow[:12]:
        print(f"  {usecs / 1000:8.1f}  {name}")
    print("\nlongest gaps between kernel messages (s, message after the gap):")
    gaps, previous = [], 0.0
    for stamp, text in messages:
        if not text.startswith(("calling ", "initcall ")):
            gaps.append((float(stamp) - previous, stamp, text))
            previous = float(stamp)
    for gap, stamp, text in sorted(gaps, reverse=True)[:12]:
        print(f"  {gap:6.2f}  [{stamp}] {text[:90]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args()
    if not args.image.is_file():
        sys.exit(f"{args.image}: no such image")
    with tempfile.TemporaryDirectory(prefix="wrtci-boot-time-") as tmp:
        copy = Path(tmp) / args.image.name  # QEMU locks the image: boot a copy
        if args.trace:
            traced_copy(args.image, copy)
            _, _, console = boot(copy, ["dmesg"])
            report_trace(console)
            return
        shutil.copyfile(args.image, copy)
        results = []
        for run in range(1, args.runs + 1):
            print(f"--- run {run} (load average {os.getloadavg()[0]:.1f})")
            wall, cpu, _ = boot(copy, [])
            results.append((wall, cpu))
            print(f"to the console prompt: {wall:.2f} s wall, {cpu:.2f} s QEMU CPU")
        if len(results) > 1:
            walls, cpus = sorted(w for w, _ in results), sorted(c for _, c in results)
            print(f"median of {len(results)}: {walls[len(walls) // 2]:.2f} s wall, "
                  f"{cpus[len(cpus) // 2]:.2f} s QEMU CPU")


if __name__ == "__main__":
    main()
