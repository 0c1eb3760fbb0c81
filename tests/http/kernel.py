"""What the kernel holds for a loopback TCP port (/proc/net/tcp): bytes a server has not read yet, and connections
waiting in a listener's accept queue. Conditions to wait for instead of sleeping."""

from __future__ import annotations

from pathlib import Path

LISTEN = "0A"


def _entries() -> list[tuple[int, int, str, int]]:
    """(local port, remote port, state, receive queue) of every IPv4 TCP socket."""
    entries = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, queues = fields[1], fields[2], fields[3], fields[4]
        entries.append((int(local.split(":")[1], 16), int(remote.split(":")[1], 16), state,
                        int(queues.split(":")[1], 16)))
    return entries


def unread_by_server(server_port: int, client_port: int) -> int | None:
    """Bytes the client on `client_port` has sent that the server has not read (accepted or not); None when there is no such connection."""
    for local, remote, state, queued in _entries():
        if local == server_port and remote == client_port and state != LISTEN:
            return queued
    return None


def accept_queue(server_port: int) -> int:
    """Connections the kernel has established on the listener and no worker has accepted yet."""
    return sum(queued for local, _, state, queued in _entries() if local == server_port and state == LISTEN)
