"""A reverse proxy in front of Debian's docker-registry that behaves like an ECR repository with
imageTagMutability=IMMUTABLE: a manifest PUT to a tag that already exists is refused (TAG_INVALID, as ECR answers
docker push), also when the new manifest is the same. Everything else passes through unchanged, including the Host
header, so the registry's upload URLs point back at the proxy.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MANIFEST_BY_TAG = re.compile(r"^/v2/(?P<repository>.+)/manifests/(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}


class ImmutableTags:
    """Forwards to upstream ("host:port"), refusing overwrites of existing tags; `refused` lists the attempts."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.refused: list[str] = []

    def forward(self, method: str, target: str, body: bytes, headers: dict) -> tuple[int, list, bytes]:
        connection = http.client.HTTPConnection(self.upstream, timeout=300)
        try:
            connection.request(method, target, body=body if body or method in ("PUT", "PATCH", "POST") else None,
                               headers=headers)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def refusal(self, method: str, path: str, headers: dict) -> bytes | None:
        match = MANIFEST_BY_TAG.match(path)
        if method != "PUT" or not match:
            return None
        probe = {key: value for key, value in headers.items() if key.lower() in ("authorization", "host")}
        status, _, _ = self.forward("HEAD", path, b"", {**probe, "Accept": "*/*"})
        if status != 200:
            return None
        self.refused.append(f"{match['repository']}:{match['tag']}")
        return json.dumps({"errors": [{"code": "TAG_INVALID", "message": (
            f"The image tag '{match['tag']}' already exists in the '{match['repository']}' repository and cannot "
            "be overwritten because the repository is immutable.")}]}).encode()


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def _handler(app: ImmutableTags) -> type[BaseHTTPRequestHandler]:
    class Proxy(BaseHTTPRequestHandler):
        def handle_any(self) -> None:
            body = _read_body(self)
            headers = {key: value for key, value in self.headers.items() if key.lower() not in HOP_BY_HOP}
            headers.pop("Content-Length", None)
            if self.command in ("PUT", "PATCH", "POST"):
                headers["Content-Length"] = str(len(body))
            refusal = app.refusal(self.command, self.path.split("?")[0], headers)
            if refusal is not None:
                status, response_headers, data = 400, [("Content-Type", "application/json")], refusal
            else:
                status, response_headers, data = app.forward(self.command, self.path, body, headers)
            self.send_response(status)
            for key, value in response_headers:
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            length = dict((key.lower(), value) for key, value in response_headers).get("content-length")
            self.send_header("Content-Length", length if self.command == "HEAD" and length else str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_HEAD = do_PUT = do_PATCH = do_POST = do_DELETE = handle_any

        def log_message(self, *args) -> None:
            pass

    return Proxy


def start(upstream: str, port: int) -> tuple[ImmutableTags, ThreadingHTTPServer]:
    """Serves the proxy on 127.0.0.1:port in a daemon thread; returns the app and the server (shutdown())."""
    app = ImmutableTags(upstream)
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(app))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return app, server
