"""A free TCP port for a test server, taken from below the kernel's ephemeral range.

`bind(("127.0.0.1", 0))` hands out a port from the ephemeral range
(/proc/sys/net/ipv4/ip_local_port_range), the range that outgoing connections take their
local ports from. Between a test closing that probe socket and its server (sshd, torch's
TCPStore) binding the port, a connection of a test running beside it (gloo's between two
ranks, ssh's, Slurm's) can take the port, and the server fails to start or, worse, the test
reaches the other process. Below the range no connection takes a port by itself: only
another listener can, and the port is drawn at random among some 12,000 and checked free.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 20000
"""Above the test cluster's fixed ports (Slurm's from 6817, MariaDB's 13306)."""

_draw = random.SystemRandom()  # not the random module's: a test may seed that


def ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (Linux's default where unreadable)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, below the ephemeral range."""
    high = ephemeral_start()
    if high - LOWEST >= 1000:
        for _ in range(200):
            port = _draw.randrange(LOWEST, high)
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as sock:  # a site whose ephemeral range starts low: the kernel's choice
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
