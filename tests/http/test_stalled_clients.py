"""Clients that stop halfway, on a real `serve` process in each layout (XGBoost: one-thread workers; multi-model and
PAT: a thread pool): with W=2 workers and 4W connections stalled in their headers and 4W in their bodies, /ping and
other clients' invocations are answered within SageMaker's 2 s; after SERVE_READ_TIMEOUT the stalled connections
are closed (a 408 in one line of JSON where the headers were whole) and counted in the log."""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from serve.process import ServeProcess
from tests.http.kernel import unread_by_server
from tests.pat_models import build_artifact, weeks

WORKERS = 2
STALLED = 4 * WORKERS  # of each kind
READ_TIMEOUT = 3.0
ROW = b"50,27.5,130,6.1"
MID_HEADERS = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Le"
MID_BODY = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 100\r\n\r\n50,27"
SLA_S = 2.0  # SageMaker's limit for /ping


def serve(env: dict[str, str], log, **kwargs) -> ServeProcess:
    return ServeProcess({"SAGEMAKER_MODEL_SERVER_WORKERS": str(WORKERS), "SERVE_READ_TIMEOUT": str(READ_TIMEOUT),
                         **env}, log, **kwargs).wait_ready()


def xgboost(tmp_path, risk_dir):
    server = serve({"SM_MODEL_DIR": str(risk_dir)}, tmp_path / "serve.log")
    return server, lambda: requests.post(server.url + "/invocations", data=ROW, headers={"Content-Type": "text/csv"},
                                         timeout=SLA_S)


def multi_model(tmp_path, risk_dir):
    server = serve({"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_MULTI_MODEL_DIR": str(risk_dir.parent)},
                   tmp_path / "serve.log")
    loaded = requests.post(server.url + "/models", json={"model_name": "risk", "url": str(risk_dir)})
    assert loaded.status_code == 200, loaded.text
    return server, lambda: requests.post(server.url + "/models/risk/invoke", data=ROW,
                                         headers={"Content-Type": "text/csv"}, timeout=SLA_S)


def pat(tmp_path, risk_dir):
    model_dir = build_artifact(tmp_path / "pat")
    server = serve({"SERVE_HANDLER": "pat", "SM_MODEL_DIR": str(model_dir), "SERVE_MAX_BATCH_SIZE": "4"},
                   tmp_path / "serve.log", deadline_s=120)
    body = json.dumps({"instances": [{"activity": weeks(1)[0].tolist()}]})
    return server, lambda: requests.post(server.url + "/invocations", data=body,
                                         headers={"Content-Type": "application/json"}, timeout=SLA_S)


def stall(server: ServeProcess, first_bytes: bytes) -> list[socket.socket]:
    connections = []
    for _ in range(STALLED):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.sendall(first_bytes)
        connections.append(sock)
    return connections


def still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""  # bytes before any request was whole would be a bug of its own
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(30)


def answered_within(call, seconds: float) -> requests.Response:
    started = time.monotonic()
    response = call()
    assert time.monotonic() - started < seconds
    return response


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("layout", [xgboost, multi_model, pat])
def test_stalled_clients_hold_no_worker_and_are_closed_after_the_read_timeout(layout, tmp_path, risk_dir):
    server, invoke = layout(tmp_path, risk_dir)
    mid_headers, mid_body = [], []
    try:
        mid_headers, mid_body = stall(server, MID_HEADERS), stall(server, MID_BODY)
        stalled_at = time.monotonic()
        stalled = mid_headers + mid_body
        deadline = time.monotonic() + 5  # the server reads what each sent (a blocking reader holds a thread there)
        while time.monotonic() < deadline and any(
                unread_by_server(server.port, sock.getsockname()[1]) for sock in stalled):
            time.sleep(0.05)

        assert answered_within(lambda: requests.get(server.url + "/ping", timeout=SLA_S), SLA_S).status_code == 200
        assert answered_within(invoke, SLA_S).status_code == 200
        assert all(still_open(sock) for sock in stalled)  # answered while every stalled client was still connected

        for sock in mid_body:  # headers whole: a 408, one line of JSON, then the connection closes
            response = read_all(sock)
            assert time.monotonic() - stalled_at >= READ_TIMEOUT - 0.1
            head, _, body = response.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in head, head
            assert json.loads(body)["code"] == 408 and body.count(b"\n") == 0
        for sock in mid_headers:  # closed without an answer
            assert read_all(sock) == b""
        assert answered_within(lambda: requests.get(server.url + "/ping", timeout=SLA_S), SLA_S).status_code == 200
    finally:
        for sock in [*mid_headers, *mid_body]:
            sock.close()
        server.stop()
    counted = {"headers incomplete": 0, "body incomplete": 0}
    for line in map(json.loads, server.logs().splitlines()):
        if line["message"] == "stalled connections closed":
            counted[line["reason"]] += line["count"]
            assert line["status"] == (408 if line["reason"] == "body incomplete" else None)
    assert counted == {"headers incomplete": STALLED, "body incomplete": STALLED}
    assert "50,27" not in server.logs()
