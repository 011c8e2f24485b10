"""Ports for the tests' own servers to listen on, chosen before they start.

A port the kernel hands out for ``bind(("127.0.0.1", 0))`` and that is then released
can be handed out again at once, to the next server binding port 0 in this process
or in another test worker (the suite runs in several, pytest-xdist): a test that
picked a port for a bridge and then started a fake on port 0 could find the fake on
it. So these ports come from below the kernel's ephemeral range (which port-0 binds
draw from), at random, never the same twice in one process, and are checked free.
"""

from __future__ import annotations

import random
import socket

#: Below Linux's default ephemeral range (32768-60999): no bind to port 0 gets these.
LOW, HIGH = 20000, 32767
_given: set[int] = set()
_random = random.Random()  # seeded from the OS: workers draw different ports


def free_port() -> int:
    """A port nothing listens on now, not given out before by this process."""
    for _ in range(1000):
        port = _random.randint(LOW, HIGH)
        if port in _given:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port between {LOW} and {HIGH}")
