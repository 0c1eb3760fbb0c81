"""The HTTP response the workers write: gunicorn's, with the head sent together with the body.

gunicorn sends a response's head in one system call and each piece of its body in another. On a keep-alive
single-row invocation that first send, which pushes the head through the kernel's TCP stack and wakes the client, is a
large part of the worker's time (`python -m bench.syscalls`), and the client cannot use the head without the body
anyway. Here the head waits for the first body bytes and leaves with them, in one send; the bytes on the wire are the
same. A chunked response, a body too large to be worth a copy, and a response that has no body (HEAD, 1xx, 204, 304:
its head leaves when it closes) are sent as gunicorn sends them.
"""

from __future__ import annotations

from gunicorn.http import wsgi

MERGE_LIMIT = 64 * 1024  # bytes: a larger first piece of body is sent after the head, not copied behind it


class OneWriteResponse(wsgi.Response):
    """gunicorn's Response whose head (committed at the first write: `headers_sent`) leaves with the first body bytes,
    or at close when no body bytes follow."""

    def __init__(self, req, sock, cfg):
        super().__init__(req, sock, cfg)
        self.held_head = b""  # the head, committed and not yet sent

    def head(self) -> bytes:
        """The status line and headers, as gunicorn's send_headers writes them."""
        lines = self.default_headers()
        lines.extend(f"{name}: {value}\r\n" for name, value in self.headers)
        return ("".join(lines) + "\r\n").encode("latin-1")

    def write(self, arg) -> None:
        if not self.headers_sent and not self.chunked:
            self.held_head, self.headers_sent = self.head(), True
        super().write(arg)

    def _emit_body(self, data) -> None:
        if self.held_head and not data:  # an empty piece: the head waits for the next
            return
        if self.held_head and len(data) <= MERGE_LIMIT:
            data, self.held_head = self.held_head + data, b""
        self.send_held_head()
        super()._emit_body(data)

    def send_held_head(self) -> None:
        if self.held_head:
            head, self.held_head = self.held_head, b""
            self.sock.sendall(head)

    def close(self) -> None:
        self.send_held_head()
        super().close()
