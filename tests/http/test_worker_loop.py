"""The one-thread worker loop (serve.workers.InlineWorker) on a real `serve` process with one worker: keep-alive and
pipelined requests on one connection, a client that stops halfway never holds the worker, and a request that runs
past SAGEMAKER_MODEL_SERVER_TIMEOUT gets its worker restarted while the server goes on serving."""

from __future__ import annotations

import shutil
import socket
import time

import numpy as np
import pytest
import requests

from serve.process import ServeProcess
from tests.conftest import load_booster
from tests.http.kernel import unread_by_server

ROW = b"50,27.5,130,6.1"


def request(body: bytes, path: str = "/invocations") -> bytes:
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nAccept: text/csv\r\nContent-Length: %d\r\n\r\n"
            % (path.encode(), len(body)) + body)


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """`count` HTTP responses read off one connection, in order (status, body)."""
    buffer, responses = b"", []
    while len(responses) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(responses)} responses"
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin1").split("\r\n")
        length = next(int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length:"))
        while len(buffer) < length:
            buffer += sock.recv(65536)
        responses.append((int(lines[0].split()[1]), buffer[:length]))
        buffer = buffer[length:]
    return responses


def post(url: str, body: bytes, timeout: float = 10) -> requests.Response:
    return requests.post(url + "/invocations", data=body, headers={"Content-Type": "text/csv"}, timeout=timeout)


@pytest.fixture(scope="module")
def server(risk_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("worker-loop") / "serve.log"
    process = ServeProcess({"SM_MODEL_DIR": str(risk_dir), "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
                            "SERVE_READ_TIMEOUT": "60"}, log).wait_ready()
    yield process
    assert process.stop() == 0


def rows(count: int) -> list[bytes]:
    return [b"%d,%.1f,%d,%.1f" % (40 + i, 20 + i / 2, 110 + i, 5 + i / 10) for i in range(count)]


def expected(risk_dir, row: bytes) -> float:
    return float(load_booster(risk_dir / "xgboost-model").inplace_predict(
        np.array([[float(v) for v in row.split(b",")]]))[0])


def test_keep_alive_and_pipelined_requests_are_answered_in_order_on_one_connection(server, risk_dir):
    bodies = rows(6)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for body in bodies[:2]:  # one at a time on the kept-alive connection
            sock.sendall(request(body))
            [(status, answer)] = read_responses(sock, 1)
            assert status == 200 and float(answer) == expected(risk_dir, body)
        sock.sendall(b"".join(request(body) for body in bodies[2:]))  # four in one write
        answers = read_responses(sock, 4)
    assert [status for status, _ in answers] == [200] * 4
    assert [float(answer) for _, answer in answers] == [expected(risk_dir, body) for body in bodies[2:]]


def test_a_client_that_stops_after_its_first_bytes_never_holds_the_worker(server):
    """The worker reads on its poller, never blocking: a client that sends the start of a request and stops (and
    clients that send nothing) hold a buffer, not the worker's one thread."""
    silent = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(3)]
    half = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        half.sendall(request(ROW)[:30])
        wait_for(lambda: unread_by_server(server.port, half.getsockname()[1]) == 0)  # the worker has read them
        for body in rows(3):
            assert post(server.url, body).status_code == 200
        half.sendall(request(ROW)[30:])  # the rest: the request is then answered
        [(status, _)] = read_responses(half, 1)
        assert status == 200
    finally:
        for sock in [*silent, half]:
            sock.close()


def wait_for(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.02)


SLOW_SCRIPT = '''
import time

import numpy as np


def input_fn(body, content_type):
    if body.startswith(b"slow,"):
        time.sleep(30)
        body = body[5:]
    elif body.startswith(b"wait,"):
        time.sleep(1.5)
        body = body[5:]
    return np.array([[float(value) for value in body.decode().split(",")]])
'''


def test_a_request_running_past_the_timeout_restarts_its_worker_and_serving_goes_on(outcome_dir, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(outcome_dir, model_dir)
    (model_dir / "code").mkdir()
    (model_dir / "code" / "inference.py").write_text(SLOW_SCRIPT)
    server = ServeProcess({"SM_MODEL_DIR": str(model_dir), "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
                           "SAGEMAKER_MODEL_SERVER_TIMEOUT": "3"}, tmp_path / "serve.log").wait_ready()
    try:
        # four kept-alive connections; three 1.5 s requests arrive while the first runs, so one pass of the poller
        # serves them back to back: 6 s in all, each request within the 3 s: the worker lives
        connections = [socket.create_connection(("127.0.0.1", server.port), timeout=20) for _ in range(4)]
        try:
            for sock in connections:
                sock.sendall(request(ROW))
                assert read_responses(sock, 1)[0][0] == 200
            connections[0].sendall(request(b"wait," + ROW))
            time.sleep(0.5)
            for sock in connections[1:]:
                sock.sendall(request(b"wait," + ROW))
            assert [read_responses(sock, 1)[0][0] for sock in connections] == [200] * 4
        finally:
            for sock in connections:
                sock.close()
        assert server.logs().count("Booting worker") == 1
        started = time.monotonic()
        with pytest.raises(requests.ConnectionError):
            post(server.url, b"slow," + ROW, timeout=25)
        assert time.monotonic() - started < 20
        server.wait_ready()
        answer = post(server.url, ROW)
        assert answer.status_code == 200 and b"slow" not in server.logs().encode()
    finally:
        assert server.stop() == 0
