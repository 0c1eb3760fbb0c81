"""Sequential requests from this process over one keep-alive connection (http.client reconnects by itself when a
server closes the connection after each response, as gunicorn's sync workers do: that cost is then part of the
latency, as for a real client)."""

from __future__ import annotations

import http.client
import time

import numpy as np


class Client:
    def __init__(self, port: int, content_type: str = "text/csv", accept: str = "text/csv",
                 path: str = "/invocations"):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.headers = {"Content-Type": content_type, "Accept": accept}
        self.path = path

    def post(self, body: bytes) -> tuple[int, bytes]:
        self.connection.request("POST", self.path, body=body, headers=self.headers)
        response = self.connection.getresponse()
        return response.status, response.read()

    def timed(self, bodies: list[bytes], count: int, warmup: int = 0) -> list[float]:
        """Seconds per request for `count` requests cycling through `bodies`; any non-200 is an error."""
        times = []
        for i in range(warmup + count):
            start = time.perf_counter()
            status, _ = self.post(bodies[i % len(bodies)])
            elapsed = time.perf_counter() - start
            if status != 200:
                raise RuntimeError(f"POST {self.path} answered {status}")
            times.append(elapsed)
        return times[warmup:]

    def close(self) -> None:
        self.connection.close()


def parse_scores(body: bytes) -> np.ndarray:
    return np.array([float(line) for line in body.split()], dtype=np.float64)


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "min_ms": float(ms.min()), "mean_ms": float(ms.mean()), "count": int(ms.size)}
