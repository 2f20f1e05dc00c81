"""How long a request waited in the kernel before the collector read it.

An agent's deadline (``X-Corecensus-Deadline-Ms``) runs from when it sent its request, and the
collector's clock for it from when it read it. Between the two, under overload, the request
sits in the kernel: its connection in the listening socket's accept queue, its bytes in the
socket's receive buffer, while every front end's event loop is busy. At 5x overload on the
bench's 2 CPUs that wait was 0.5-1 s of a 2 s deadline, invisible to the door: a fifth of the
acknowledged uploads were answered after their agent had given up (bench/collector_bench.py,
README). The door and the late check count it against the deadline (server.py).

Linux tells it: ``tcp_info.tcpi_last_data_recv`` (``getsockopt(TCP_INFO)``, include/uapi/
linux/tcp.h) is the milliseconds since the last data segment arrived on the connection (since
it was established, before any data). Read when a request's headers have been parsed, it is at
least how long the request had been waiting for the collector -- the time since its headers
(and whatever of its body) last arrived -- and it never counts a slow client's own trickle
against it (each segment resets it). The idea of measuring the time a request spent queued and
shedding on it is CoDel's, as applied to server queues in "Fail at Scale" (Maurer, ACM Queue
13(8), 2015).
"""

from __future__ import annotations

import socket
import struct
from typing import Any

__all__ = ["ARRIVED_SCOPE_KEY", "kernel_wait_s"]

# Where the protocol leaves, in a request's ASGI scope, when the request arrived: a
# ``time.perf_counter()`` value, the moment its headers were parsed less its wait in the kernel.
ARRIVED_SCOPE_KEY = "corecensus.arrived"

# struct tcp_info: eight bytes of u8 fields, then u32 rto, ato, snd_mss, rcv_mss, unacked,
# sacked, lost, retrans, fackets, last_data_sent, last_ack_sent, last_data_recv (offset 52).
_LAST_DATA_RECV = struct.Struct("=I")
_LAST_DATA_RECV_OFFSET = 52
_TCP_INFO_BYTES = _LAST_DATA_RECV_OFFSET + _LAST_DATA_RECV.size
_TCP_INFO = getattr(socket, "TCP_INFO", None)


def kernel_wait_s(sock: Any) -> float:
    """Seconds since data last arrived on ``sock`` (a TCP socket, or asyncio's wrapper of
    one); 0.0 when the kernel cannot say (a Unix socket, a platform without ``TCP_INFO``)."""
    if sock is None or _TCP_INFO is None:
        return 0.0
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_BYTES)
    except (OSError, ValueError):
        return 0.0
    if len(info) < _TCP_INFO_BYTES:
        return 0.0
    (ms,) = _LAST_DATA_RECV.unpack_from(info, _LAST_DATA_RECV_OFFSET)
    return float(ms) / 1000.0
