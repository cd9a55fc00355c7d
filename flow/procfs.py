"""What the kernel says of a local cluster's processes (Linux /proc): which
processes are this run's (`family`: the driver and what it started, Ray's
servers and workers included), their memory, and the sockets they listen
on beyond loopback (`exposed`). Also `loopback_up`, for runs in a network
namespace of their own."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def family(pid: int) -> set[int]:
    """`pid` and every process descended from it (by each one's parent in
    /proc/PID/stat): a local cluster's processes, started by its driver."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            after = stat.read_text().rsplit(")", 1)[1].split()  # the name, in (), may hold spaces
            children.setdefault(int(after[1]), []).append(int(stat.parent.name))
    found, todo = {pid}, [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def memory_mb(pids: set[int]) -> float:
    """The resident memory of `pids` together, in MB."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            total += int(next((line.split()[1] for line in lines if line.startswith("VmRSS:")), "0"))
    return round(total / 1024, 1)


def exposed(pids: set[int]) -> list[str]:
    """The listening TCP sockets of `pids` bound to an address other than
    loopback, as "ADDRESS:PORT (process)": what a local cluster must not
    have. Read from the kernel's tables (/proc/net/tcp and tcp6: this
    network namespace's) and each process's file descriptors."""
    listening = _listening()
    found = []
    for pid in sorted(pids) if listening else ():
        proc = Path(f"/proc/{pid}")
        try:
            name = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace").rsplit("/", 1)[-1]
            links = [_link(fd) for fd in (proc / "fd").iterdir()]
        except OSError:  # ended meanwhile, or not ours to read
            continue
        found += [f"{listening[link[8:-1]]} ({name})" for link in links
                  if link.startswith("socket:[") and link[8:-1] in listening]  # fmt: skip
    return sorted(found)


def _listening() -> dict[str, str]:
    """socket inode -> ADDRESS:PORT of every TCP socket listening beyond loopback."""
    import ipaddress

    listening = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except FileNotFoundError:  # tcp6: a kernel without IPv6
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            host, port = fields[1].split(":")
            raw = bytes.fromhex(host)  # 32-bit words in the host's (little-endian) order
            address = ipaddress.ip_address(b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)))
            mapped = getattr(address, "ipv4_mapped", None)
            if not (address.is_loopback or (mapped is not None and mapped.is_loopback)):
                at = f"[{address}]" if address.version == 6 else str(address)
                listening[fields[9]] = f"{at}:{int(port, 16)}"
    return listening


def _link(fd: Path) -> str:
    try:
        return os.readlink(fd)
    except OSError:  # closed meanwhile
        return ""


def loopback_up() -> None:
    """`ip link set lo up` without iproute2 (the flags by ioctl): for a run
    in a network namespace of its own (`unshare -n`: the cluster tests),
    where only a loopback that is down exists."""
    import fcntl
    import socket
    import struct

    get_flags, set_flags, up = 0x8913, 0x8914, 0x1  # SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sh", fcntl.ioctl(s, get_flags, struct.pack("16sh", b"lo", 0)))[1]
        fcntl.ioctl(s, set_flags, struct.pack("16sh", b"lo", flags | up))
