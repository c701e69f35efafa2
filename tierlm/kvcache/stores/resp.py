"""The Redis protocol (RESP) for page-sized values without copies: SET commands whose value is sent from
the host page itself, and GET replies read from the socket straight into the host page.

Only the framing of these two commands lives here; connections (pool, auth, database, TLS, timeouts) are
redis-py's. Small parts are coalesced so a batch of small pages is still a few large sends.
"""
from __future__ import annotations

import socket
from typing import Optional, Sequence

_COALESCE = 64 << 10  # parts smaller than this are copied into one send buffer


def _bulk(arg: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(arg), arg)


def pack_sets(keys: Sequence[bytes], heads: Sequence[bytes], payloads: Sequence[memoryview],
              options: Sequence[bytes]) -> list[bytes | memoryview]:
    """`SET key head+payload *options` for each page, as send chunks (each payload is not copied unless
    small)."""
    tail = b"".join(_bulk(o) for o in options)
    chunks: list[bytes | memoryview] = []
    buf = bytearray()
    for key, head, payload in zip(keys, heads, payloads):
        buf += b"*%d\r\n$3\r\nSET\r\n%s$%d\r\n" % (3 + len(options), _bulk(key), len(head) + len(payload))
        buf += head
        if len(payload) < _COALESCE:
            buf += payload
        else:
            chunks += [bytes(buf), payload]
            buf = bytearray()
        buf += b"\r\n" + tail
    return chunks + [bytes(buf)]


def pack_gets(keys: Sequence[bytes]) -> list[bytes]:
    return [b"".join(b"*2\r\n$3\r\nGET\r\n" + _bulk(k) for k in keys)]


class ReplyError(Exception):
    """The server answered with an error reply."""


class Replies:
    """Reads replies from a connected socket, bulk values into caller buffers."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.pos = 0

    def _fill(self) -> None:
        if self.pos:
            del self.buf[:self.pos]
            self.pos = 0
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk

    def line(self) -> bytes:
        while (end := self.buf.find(b"\r\n", self.pos)) < 0:
            self._fill()
        out = bytes(self.buf[self.pos:end])
        self.pos = end + 2
        return out

    def read_into(self, dest: memoryview) -> None:
        """Fill `dest` from the stream: first what is buffered, then straight from the socket."""
        have = min(len(self.buf) - self.pos, len(dest))
        dest[:have] = self.buf[self.pos:self.pos + have]
        self.pos += have
        got = have
        while got < len(dest):
            n = self.sock.recv_into(dest[got:])
            if not n:
                raise ConnectionError("the server closed the connection")
            got += n

    def skip(self, n: int) -> None:
        scratch = memoryview(bytearray(min(n, 1 << 20)))
        while n > 0:
            step = min(n, len(scratch))
            self.read_into(scratch[:step])
            n -= step

    def bulk_length(self) -> Optional[int]:
        """The length of the next bulk reply, None for a nil; raises ReplyError for an error reply."""
        line = self.line()
        kind = line[:1]
        if kind == b"$":
            n = int(line[1:])
            return None if n < 0 else n
        if kind == b"_":  # RESP3 null
            return None
        if kind == b"-":
            raise ReplyError(line[1:].decode(errors="replace"))
        raise ConnectionError(f"unexpected reply {line[:32]!r}")

    def status(self) -> bytes:
        """A simple reply (+OK, :1, nil as b''); raises ReplyError for an error reply."""
        line = self.line()
        if line[:1] == b"-":
            raise ReplyError(line[1:].decode(errors="replace"))
        if line[:1] == b"$":  # a nil bulk (SET NX on a present key) or, never here, a value
            n = int(line[1:])
            if n >= 0:
                self.skip(n + 2)
            return b""
        return line

    def end_bulk(self) -> None:
        crlf = memoryview(bytearray(2))
        self.read_into(crlf)
        if bytes(crlf) != b"\r\n":
            raise ConnectionError("bulk reply not terminated")
