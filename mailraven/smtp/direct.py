"""Writing a reply straight to the socket.

Twisted buffers every C{transport.write} and sends it on the next turn of
the reactor: per reply one C{epoll_ctl} to watch for writability, one more
turn of the loop, the send, and one more C{epoll_ctl} to stop watching. An
SMTP session is a string of small replies, each to an idle socket, so that
was two of every five system calls the reactor made for a message
(strace: 17 epoll_ctl per message, against 7 sends).

L{sendNow} sends at once when nothing is queued before it and the
connection is plain TCP, and gives whatever the kernel did not take (or any
other case: TLS, a wrapper, a closing connection) to the transport as usual,
so the order of bytes and every error path stay Twisted's.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp


def sendNow(transport: Any, data: bytes) -> None:
    if not _idlePlainTCP(transport):
        transport.write(data)
        return
    try:
        sent = transport.socket.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError:
        transport.write(data)  # Twisted notices the error and closes as usual
        return
    if sent < len(data):
        transport.write(data[sent:])


def _idlePlainTCP(transport: Any) -> bool:
    """
    A TCP connection with nothing buffered, not TLS, not closing. Reads
    Twisted's private buffer fields with defaults that say "not idle", so a
    Twisted that renames them only loses the shortcut.
    """
    return (
        isinstance(transport, tcp.Connection)
        and getattr(transport, "TLS", True) is False
        and transport.connected
        and not transport.disconnecting
        and getattr(transport, "_writeDisconnected", True) is False
        and getattr(transport, "_tempDataBuffer", None) == []
        and getattr(transport, "offset", -1) == len(transport.dataBuffer)
    )
