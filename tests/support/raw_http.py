"""HTTP/1.1 over a bare socket, for requests no client library would send: bytes that are not
UTF-8 in a header, a stray CR or NUL, a body trickled a byte at a time, pipelined requests."""

from __future__ import annotations

import socket
import time
from typing import NamedTuple
from urllib.parse import urlsplit

__all__ = ["RawResponse", "closed_within", "connect", "exchange", "read_response"]


class RawResponse(NamedTuple):
    status: int
    headers: dict[str, str]  # lower-cased names; the last of repeated ones
    body: bytes
    raw: bytes


def connect(url: str, *, source: str = "127.0.0.1", timeout: float = 5.0) -> socket.socket:
    """A connection to the server at `url`, from the loopback address `source` (any 127.x:
    each is a different client to the server)."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect((parts.hostname or "127.0.0.1", parts.port or 80))
    return sock


def _recv(sock: socket.socket, buf: bytearray) -> bool:
    try:
        data = sock.recv(65536)
    except (ConnectionResetError, BrokenPipeError):
        return False
    if not data:
        return False
    buf.extend(data)
    return True


def read_response(sock: socket.socket, buf: bytearray | None = None) -> RawResponse | None:
    """The next final (non-1xx) response on `sock`, or None when the server closed first.
    `buf` carries bytes read past one response into the next call (pipelining)."""
    buf = bytearray() if buf is None else buf
    while True:
        while b"\r\n\r\n" not in buf:
            if not _recv(sock, buf):
                return None
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        if 100 <= status < 200:
            buf[:] = rest
            continue
        length = int(headers.get("content-length", "0"))
        buf[:] = rest
        while len(buf) < length:
            if not _recv(sock, buf):
                break
        body = bytes(buf[:length])
        del buf[:length]
        return RawResponse(status, headers, body, head + b"\r\n\r\n" + body)


def exchange(url: str, data: bytes, *, source: str = "127.0.0.1",
             timeout: float = 5.0) -> RawResponse | None:
    """Send `data` on a new connection and read one response (None: closed without one)."""
    with connect(url, source=source, timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (ConnectionResetError, BrokenPipeError):
            return None
        return read_response(sock)


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed `sock` (reading and dropping what it sends), or None
    when it was still open after `seconds`."""
    start = time.monotonic()
    sock.settimeout(0.05)
    while time.monotonic() - start < seconds:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start
        if not data:
            return time.monotonic() - start
    return None
