"""The HTTP layer on a real `serve` process: gunicorn's own errors are our one-line JSON, a body left unread closes the
connection, and a model that cannot be served is said once, in JSON, with exit code 3."""

import json
import socket

import pytest
import requests

from serve.process import ServeProcess
from tests.http.emf_spec import without_clock_figures

SECRET = "77.123-secret-header-value"


@pytest.fixture(scope="module")
def server(risk_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("http-layer") / "serve.log"
    process = ServeProcess({"SM_MODEL_DIR": str(risk_dir), "MAX_CONTENT_LENGTH": "100000"}, log).wait_ready()
    yield process
    process.stop()


def raw_request(server, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def assert_json_error(response: bytes, status: int) -> dict:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {status} "), lines[0]
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert b"\n" not in body.rstrip(b"\n") and int(headers["content-length"]) == len(body)
    error = json.loads(body)
    assert error["code"] == status and error["error"] and SECRET not in error["error"]
    return error


GUNICORN_ERRORS = {
    "a header field over 8190 bytes": (b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + SECRET.encode() + b"a" * 9000
                                       + b"\r\n\r\n", 431),
    "101 header fields": (b"GET /ping HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, SECRET.encode())
                                                            for i in range(101)) + b"\r\n", 431),
    "a request line over 4094 bytes": (b"GET /ping?" + SECRET.encode() + b"a" * 5000 + b" HTTP/1.1\r\n\r\n", 414),
    "a malformed request line": (b"GET /ping " + SECRET.encode() + b" HTTP/1.1\r\n\r\n", 400),
    "an invalid header name": (b"GET /ping HTTP/1.1\r\nX Bad" + SECRET.encode() + b": 1\r\n\r\n", 400),
    "an invalid method": (b"G@T /ping HTTP/1.1\r\n\r\n", 400),
    "a bad HTTP version": (b"GET /ping HTTP/9.Z\r\n\r\n", 400),
    "a bad chunk size": (b"POST /invocations HTTP/1.1\r\nContent-Type: text/csv\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"zz" + SECRET.encode() + b"\r\n", 400),
}


@pytest.mark.parametrize("case", GUNICORN_ERRORS)
def test_errors_of_the_http_layer_are_one_line_of_json(server, case):
    request, status = GUNICORN_ERRORS[case]
    assert_json_error(raw_request(server, request), status)
    assert requests.get(server.url + "/ping").status_code == 200


def test_http_layer_errors_never_log_what_was_sent(server):
    for request, _ in GUNICORN_ERRORS.values():
        raw_request(server, request)
    logs = server.logs()
    assert SECRET not in without_clock_figures(logs)
    for line in logs.splitlines():
        json.loads(line)


def test_a_body_refused_unread_closes_the_connection(server):
    session = requests.Session()
    body = b"1,2,3,4\n" * 25_000  # 200 kB, over this server's 100 kB limit, small enough to sit in socket buffers
    response = session.post(server.url + "/invocations", data=body, headers={"Content-Type": "text/csv"})
    assert response.status_code == 413 and response.headers["Connection"] == "close"
    assert json.loads(response.content)["code"] == 413
    after = session.post(server.url + "/invocations", data=b"1,2,3,4", headers={"Content-Type": "text/csv"})
    assert after.status_code == 200
    for method, path in [("POST", "/ping"), ("GET", "/no-such-route")]:  # routes that read no body
        response = session.request(method, server.url + path, data=b"x" * 90_000)
        assert response.status_code in (404, 405) and response.headers["Connection"] == "close"
        assert session.get(server.url + "/ping").status_code == 200


def test_a_body_that_was_read_keeps_the_connection_alive(server):
    session = requests.Session()
    for body in (b"1,2,3,4", b"not,a,number,x"):
        response = session.post(server.url + "/invocations", data=body, headers={"Content-Type": "text/csv"})
        assert response.status_code in (200, 400) and response.headers["Connection"] == "keep-alive"


def test_a_model_that_cannot_be_served_is_said_once_in_json_with_exit_code_3(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "xgboost-model").write_bytes(b"not a model")
    process = ServeProcess({"SM_MODEL_DIR": str(tmp_path / "model")}, tmp_path / "serve.log", deadline_s=30)
    assert process.process.wait(30) == 3
    process.stop()
    lines = [json.loads(line) for line in process.logs().splitlines()]  # every line is JSON
    reasons = [line for line in lines if "is not a booster XGBoost" in json.dumps(line)]
    assert len(reasons) == 1, lines
    assert reasons[0]["level"] == "critical" and reasons[0]["exit_code"] == 3
    assert reasons[0]["message"] == "cannot serve the model" and "traceback" not in reasons[0]
    assert [line for line in lines if line["level"] not in ("info", "debug")] == reasons
    assert not any("Worker" in line["message"] and "exit" in line["message"] for line in lines)


def test_a_chunked_body_in_pieces_after_100_continue_is_answered_once_whole(server):
    """The worker buffers the request: told to continue once the headers are in, it serves the body only whole."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nExpect: 100-continue\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"4\r\n1,2,\r\n")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):  # nothing is served before the last chunk
            sock.recv(65536)
        sock.settimeout(10)
        sock.sendall(b"3\r\n3,4\r\n0\r\n\r\n")
        response = b""
        while b"\r\n\r\n" not in response or len(response.partition(b"\r\n\r\n")[2]) < int(
                response.lower().split(b"content-length:")[1].split(b"\r")[0]):
            response += sock.recv(65536)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"100 Continue" not in response
    expected = requests.post(server.url + "/invocations", data=b"1,2,3,4", headers={"Content-Type": "text/csv"})
    assert body == expected.content
