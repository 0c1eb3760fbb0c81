"""A client connection as a worker's poller sees it: bytes read without blocking into a buffer, handed on only as
whole requests, so that a client that stops halfway holds a little memory and never a thread.

gunicorn's own parser reads each request, from the buffer instead of the socket: headers once they have all arrived,
the body (Content-Length, or chunked) once it has. This module only finds where a request ends.
"""

from __future__ import annotations

import io
import time

from gunicorn.http import errors as http_errors
from gunicorn.http.body import ChunkedReader, LengthReader
from gunicorn.http.message import Request
from gunicorn.http.unreader import Unreader

LIMIT_REQUEST_LINE = 4094  # bytes; gunicorn's defaults, stated here so that they are documented in one place
LIMIT_REQUEST_FIELDS = 100
LIMIT_REQUEST_FIELD_SIZE = 8190
_HEAD_LIMIT = LIMIT_REQUEST_LINE + 2 + LIMIT_REQUEST_FIELDS * (LIMIT_REQUEST_FIELD_SIZE + 2) + 4
_CHUNK_LINE_LIMIT = 1024  # a chunk-size line (with extensions) longer than this is handed to gunicorn to refuse
_RECV = 64 * 1024
_RECV_BODY = 1024 * 1024  # the largest read once the length still to come is known
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class BodyTooLarge(Exception):
    """A chunked body that has declared more than the payload limit."""


class ReceivedBytes(Unreader):
    """What gunicorn's parser reads a request from: bytes already received, never the socket. Reading past them
    (a request handed on before its body arrived: over the payload limit) is an error, never a short body."""

    def __init__(self, data: bytes):
        super().__init__()
        self.pending = data
        self.complete = True

    def chunk(self, size_hint=None):
        data, self.pending = self.pending, b""
        if not data and not self.complete:
            raise http_errors.NoMoreData(b"")
        return data


class ChunkedEnd:
    """Where a chunked body ends, found from its chunk-size lines alone (gunicorn's ChunkedReader decodes it, and
    refuses bad framing, once it is whole). Anything it cannot read ends the body where the bytes end, for gunicorn
    to refuse."""

    def __init__(self, start: int, limit: int):
        self.position = start  # where the next chunk-size line starts
        self.declared = 0  # body bytes the chunk sizes add up to
        self.limit = limit
        self.framed_limit = start + 2 * limit + _RECV  # chunks far smaller than their framing: refused as well

    def find(self, buffer: bytearray) -> int | None:
        if len(buffer) > self.framed_limit:
            raise BodyTooLarge
        while True:
            line_end = buffer.find(b"\r\n", self.position)
            if line_end < 0:
                return len(buffer) if len(buffer) - self.position > _CHUNK_LINE_LIMIT else None
            size = bytes(buffer[self.position:line_end]).partition(b";")[0].strip(b" \t")
            if not size or size.strip(b"0123456789abcdefABCDEF"):
                return len(buffer)
            size = int(size, 16)
            if size == 0:  # the last chunk, then trailer lines up to an empty one
                if buffer[line_end + 2:line_end + 4] == b"\r\n":
                    return line_end + 4
                end = buffer.find(b"\r\n\r\n", line_end + 2)
                if end < 0:
                    return len(buffer) if len(buffer) - line_end > _HEAD_LIMIT else None
                return end + 4
            self.declared += size
            if self.declared > self.limit:
                raise BodyTooLarge
            following = line_end + 2 + size + 2
            if following > len(buffer):
                return None
            self.position = following


class Connection:
    """One client connection: its socket (non-blocking while in the poller), the bytes received and not yet served,
    and the time by which it must make progress (`deadline`)."""

    def __init__(self, cfg, sock, client, server, deadline: float):
        sock.setblocking(False)
        self.cfg, self.sock, self.client, self.server = cfg, sock, client, server
        self.deadline = deadline
        self.served = 0  # requests answered on this connection
        self.buffer = bytearray()
        self._scanned = 0  # the head's end is not before this offset
        self._request = None  # the head of the request being received, once whole
        self._head_length = 0
        self._end = 0  # where the request ends in the buffer, once known
        self._chunked: ChunkedEnd | None = None
        self.continued = False  # "100 Continue" sent for the request being received
        self.unread = False  # the last request was handed on before its body arrived: close, do not read on

    @property
    def has_head(self) -> bool:
        return self._request is not None

    def receive(self, read_timeout: float) -> bool:
        """Reads what the socket holds; False when the client has closed. The headers must be whole within
        `read_timeout` of their first byte; after them, the body may not pause for longer."""
        wanted = _RECV
        if self._end:
            wanted = min(max(_RECV, self._end - len(self.buffer)), _RECV_BODY)
        try:
            data = self.sock.recv(wanted)
        except (BlockingIOError, InterruptedError):
            return True
        if not data:
            return False
        if not self.buffer or self._request is not None:  # a request's first bytes, or progress of its body
            self.deadline = time.monotonic() + read_timeout
        self.buffer += data
        return True

    def take_request(self, max_body: int):
        """The next whole request in the buffer (a gunicorn Request whose body reads from memory), or None while it
        is incomplete. gunicorn's parse errors pass through; a chunked body over `max_body` raises BodyTooLarge."""
        if self._request is None and not self._parse_head(max_body):
            return None
        if self._chunked is not None:
            end = self._chunked.find(self.buffer)
            if end is None:
                return None
            self._end = end
        if len(self.buffer) < self._end:
            return None
        request, source = self._request, self._request.unreader
        with memoryview(self.buffer) as view:
            body = view[self._head_length:self._end].tobytes()
        del self.buffer[:self._end]
        if isinstance(request.body.reader, LengthReader) and source.complete:
            # The whole body, as the app's input: gunicorn's reader would copy what is left of it on every read.
            request.body = io.BytesIO(body)
        else:  # chunked (gunicorn decodes it), or cut short at the payload limit (gunicorn refuses to read on)
            source.pending = body
        self._request, self._chunked, self._scanned, self._end, self._head_length = None, None, 0, 0, 0
        if self.continued:  # said already: gunicorn would say it again
            request.headers = [(name, value) for name, value in request.headers if name != "EXPECT"]
            if hasattr(request, "_expected_100_continue"):
                request._expected_100_continue = False
            self.continued = False
        return request

    def _parse_head(self, max_body: int) -> bool:
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n", self._scanned)
        if end >= 0:
            head = end + 4
        elif b"\n\n" in buffer or (b"\r\n" not in buffer[:LIMIT_REQUEST_LINE + 2]
                                   and len(buffer) > LIMIT_REQUEST_LINE + 2):
            head = len(buffer)  # a bare LF, or a request line over the limit: gunicorn's parser says which
        elif len(buffer) > _HEAD_LIMIT:
            raise http_errors.LimitRequestHeaders("max buffer headers")
        else:
            self._scanned = max(0, len(buffer) - 3)
            return False
        source = ReceivedBytes(bytes(buffer[:head]))
        try:
            request = Request(self.cfg, source, self.client, self.served + 1)
        except http_errors.NoMoreData:  # gunicorn waits for more of the head
            self._scanned = max(0, len(buffer) - 3)
            return False
        self._request, self._head_length = request, head
        reader = request.body.reader
        if isinstance(reader, ChunkedReader):
            self._chunked = ChunkedEnd(head, max_body)
        elif isinstance(reader, LengthReader) and reader.length:
            self._end = head + reader.length
            if reader.length > max_body:  # the app refuses it unread: no need to wait for it
                self._end, source.complete, self.unread = min(self._end, len(buffer)), False, True
        else:  # no body: a request without Content-Length or Transfer-Encoding has none (RFC 9112 section 6.3)
            self._end = head
        return True

    def expects_continue(self) -> bool:
        """Whether the request being received (its head whole, its body not) asks for "100 Continue" first and has not
        been told yet (gunicorn's parser has refused any other expectation)."""
        return (self._request is not None and not self.continued and self._request.version >= (1, 1)
                and any(name == "EXPECT" and value.lower() == "100-continue" for name, value in self._request.headers))
