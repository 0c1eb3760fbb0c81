"""Faults on a real `serve` process (XGBoost, 2 workers) under load: a worker killed with SIGKILL, SIGTERM, and a
model directory that disappears or becomes unreadable after start. Figures go to build/reliability/faults.json."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT
from serve.process import ServeProcess
from tests.http.kernel import accept_queue

REPORT = ROOT / "build" / "reliability" / "faults.json"
CLIENTS = 8
ROW = b"50,27.5,130,6.1"


def write_report(name: str, figures: dict) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    report[name] = figures
    REPORT.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"\n{name}: {json.dumps(figures)}")


def workers_of(master: int) -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                pids.add(int(entry.name))
    return pids


def wait_for(condition, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.02)
    raise TimeoutError("condition not met")


class Load:
    """CLIENTS threads, each with its own keep-alive connection, posting `body(client, n)` until stopped. Records, per
    client, (time, status or exception name, request number)."""

    def __init__(self, url: str, body=lambda client, n: ROW, path="/invocations"):
        self.url, self.body, self.path = url, body, path
        self.running = True
        self.results: list[list[tuple[float, object, int]]] = [[] for _ in range(CLIENTS)]
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(CLIENTS)]

    def client(self, index: int) -> None:
        session, n = requests.Session(), 0
        while self.running:
            n += 1
            try:
                outcome = session.post(self.url + self.path, data=self.body(index, n),
                                       headers={"Content-Type": "text/csv"}, timeout=30).status_code
            except requests.ConnectionError as error:
                outcome = "refused" if "refused" in str(error).lower() else type(error).__name__
                time.sleep(0.01)
            self.results[index].append((time.time(), outcome, n))

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.running = False
        for thread in self.threads:
            thread.join(60)

    def outcomes(self, since: float = 0) -> Counter:
        return Counter(outcome for results in self.results for at, outcome, _ in results if at >= since)


def logged_times(server: ServeProcess, message: str) -> list[float]:
    """When each log line starting with `message` was written (its UTC "time", as seconds since the epoch)."""
    return [datetime.fromisoformat(entry["time"]).timestamp() for entry in map(json.loads, server.logs().splitlines())
            if entry["message"].startswith(message)]


def test_log_times_are_read_as_utc_whatever_the_local_zone(monkeypatch, tmp_path):
    """The log writes UTC ("...Z"); the reader must not depend on the local zone or its daylight-saving rules."""
    log = tmp_path / "serve.log"
    log.write_text(json.dumps({"time": "2026-03-29T01:30:00.250Z", "message": "model loaded"}) + "\n")
    server = ServeProcess.__new__(ServeProcess)
    server.log_path, server.log = log, open(log, "rb")
    expected = datetime(2026, 3, 29, 1, 30, 0, 250000, tzinfo=timezone.utc).timestamp()
    for zone in ("Europe/Berlin", "America/New_York", "UTC"):  # the first changes to summer time at 01:00 UTC
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        assert logged_times(server, "model loaded") == [expected]
    monkeypatch.delenv("TZ")
    time.tzset()
    server.log.close()


def test_a_worker_killed_under_load_is_replaced_and_only_its_requests_fail(risk_dir, tmp_path):
    server = ServeProcess({"SM_MODEL_DIR": str(risk_dir)}, tmp_path / "serve.log").wait_ready()
    try:
        master = server.process.pid
        before = wait_for(lambda: pids if len(pids := workers_of(master)) == 2 else None)
        with Load(server.url) as load:
            time.sleep(1.5)
            victim = min(before)
            killed_at = time.time()
            os.kill(victim, signal.SIGKILL)
            replaced = wait_for(lambda: workers_of(master) - before)
            ready_at = wait_for(lambda: [t for t in logged_times(server, "model loaded") if t >= killed_at - 0.05])[0]
            time.sleep(2)
        after = workers_of(master)
        failures = [(at, outcome) for results in load.results for at, outcome, _ in results
                    if not isinstance(outcome, int)]
        per_client = [sum(not isinstance(outcome, int) for _, outcome, _ in results) for results in load.results]
        statuses = load.outcomes()
        figures = {"clients": CLIENTS, "requests": sum(statuses.values()), "answered_200": statuses[200],
                   "failed": len(failures), "failures": dict(Counter(outcome for _, outcome in failures)),
                   "replacement_ready_s": round(ready_at - killed_at, 3)}
        write_report("kill -9 worker", figures)
        assert all(isinstance(s, str) or s == 200 for s in statuses), statuses  # no 5xx, no other status
        assert victim not in after and len(after) == 2 and replaced <= after
        assert max(per_client) <= 1 and len(failures) <= CLIENTS  # at most the one request each connection had there
        assert all(killed_at - 0.05 <= at <= killed_at + 5 for at, _ in failures), failures
        assert statuses[200] > 100 and requests.get(server.url + "/ping").status_code == 200
        assert sum("Booting worker" in line for line in server.logs().splitlines()) == 3
    finally:
        assert server.stop() == 0


SCRIPT = '''
import time
import numpy as np

STARTED = {started!r}


def input_fn(body, content_type):
    request_id, _, row = body.decode().partition(",")
    with open(STARTED, "a") as started:
        started.write(request_id + "\\n")
    time.sleep(3 if request_id.startswith("hold") else 0.02)
    return np.array([[float(value) for value in row.split(",")]])
'''
QUEUED = 4


def raw_post(server: ServeProcess, request_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    body = f"{request_id},".encode() + ROW
    sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: %d\r\n\r\n"
                 % len(body) + body)
    return sock


def status_of(sock: socket.socket) -> int | str:
    try:
        head = sock.recv(65536)
    except OSError as error:
        return type(error).__name__
    finally:
        sock.close()
    return int(head.split()[1]) if head else "closed"


def test_sigterm_under_load_loses_no_accepted_request(outcome_dir, tmp_path):
    """SIGTERM with 8 clients posting, both workers inside a request and QUEUED connections established in the
    kernel's queue, not yet accepted: every request started is answered, and so is every queued connection (its client
    has sent its request); clients that connect after the stop are refused, and no connection fails otherwise."""
    model_dir, started = tmp_path / "model", tmp_path / "started.txt"
    shutil.copytree(outcome_dir, model_dir)
    (model_dir / "code").mkdir()
    (model_dir / "code" / "inference.py").write_text(SCRIPT.format(started=str(started)))
    server = ServeProcess({"SM_MODEL_DIR": str(model_dir)}, tmp_path / "serve.log").wait_ready()
    with Load(server.url, body=lambda client, n: f"{client}-{n},".encode() + ROW) as load:
        time.sleep(1.5)
        holds = []
        for worker in range(2):  # one worker busy for 3 s, so the other one takes the next: both busy
            holds.append(raw_post(server, f"hold-{worker}"))
            wait_for(lambda: f"hold-{worker}" in started.read_text().split(), 10)
        queued = [raw_post(server, f"queued-{i}") for i in range(QUEUED)]
        wait_for(lambda: accept_queue(server.port) >= QUEUED, 2)  # established, and no worker has accepted them
        term_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(30)
        stopped_s = time.monotonic() - term_at
        wait_for(lambda: all(results and results[-1][1] == "refused" for results in load.results), 30)
    server.stop()
    answers = {sock_id: status_of(sock) for sock_id, sock in [*enumerate(holds), *((f"q{i}", s) for i, s in
                                                                                   enumerate(queued))]}
    accepted = set(started.read_text().split())
    answered = {f"{client}-{n}" for client, results in enumerate(load.results) for _, outcome, n in results
                if outcome == 200}
    statuses = load.outcomes()
    figures = {"clients": CLIENTS, "accepted": len(accepted), "answered_200": len(answered),
               "accepted_not_answered": len(accepted - answered - {f"hold-{i}" for i in range(2)}
                                            - {f"queued-{i}" for i in range(QUEUED)}),
               "queued_before_the_stop": QUEUED,
               "queued_answered_200": sum(answers[f"q{i}"] == 200 for i in range(QUEUED)),
               "outcomes": {str(k): v for k, v in statuses.items()}, "refused_after_stop": statuses["refused"],
               "exit_code": code, "stop_s": round(stopped_s, 2)}
    write_report("SIGTERM under load", figures)
    assert code == 0 and stopped_s < 25
    assert set(answers.values()) == {200}, answers  # the busy workers' requests, and every queued connection
    assert accepted and not figures["accepted_not_answered"], sorted(accepted - answered)[:10]
    assert set(statuses) <= {200, "refused"} and statuses["refused"], statuses  # no reset, no other failure


@pytest.mark.parametrize("fault", ["removed", "unreadable"])
def test_a_model_directory_that_goes_away_keeps_serving_what_was_loaded(risk_dir, tmp_path, fault):
    model_dir = tmp_path / "model"
    shutil.copytree(risk_dir, model_dir)
    server = ServeProcess({"SM_MODEL_DIR": str(model_dir)}, tmp_path / "serve.log").wait_ready()
    try:
        wait_for(lambda: len(logged_times(server, "model loaded")) == 2)  # both workers, not only the first, started
        break_directory(model_dir, fault)
        session = requests.Session()
        for _ in range(50):
            try:
                response = session.post(server.url + "/invocations", data=ROW, headers={"Content-Type": "text/csv"})
            except requests.ConnectionError:
                pytest.fail(f"the server stopped serving: {server.logs()[-3000:]}")
            assert response.status_code == 200
        assert session.get(server.url + "/ping").status_code == 200
        # A replacement worker must load the model again, and cannot: the server says why once and exits with 3.
        os.kill(min(workers_of(server.process.pid)), signal.SIGKILL)
        assert server.process.wait(60) == 3
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.logs().splitlines()]
    failures = [line for line in lines if line["level"] == "critical"]
    assert len(failures) == 1 and failures[0]["message"] == "cannot serve the model"
    expected = "does not exist" if fault == "removed" else "cannot read xgboost-model"
    assert expected in failures[0]["reason"], failures[0]
    write_report(f"model directory {fault} after start", {"invocations_after": 50, "answered_200": 50,
                                                           "worker_replacement": failures[0]["reason"],
                                                           "exit_code": 3})


def break_directory(model_dir: Path, fault: str) -> None:
    if fault == "removed":
        shutil.rmtree(model_dir)
    elif os.geteuid() != 0:
        (model_dir / "xgboost-model").chmod(0)
    else:  # root reads any file: a file no process can read from its start (EIO) stands in for one it may not
        (model_dir / "xgboost-model").unlink()
        (model_dir / "xgboost-model").symlink_to("/proc/self/mem")


@pytest.fixture
def multi_server(tmp_path, risk_dir):
    root = tmp_path / "models"
    for name in ("kept", "removed", "unreadable"):
        shutil.copytree(risk_dir, root / name / "model")
    server = ServeProcess({"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_MULTI_MODEL_DIR": str(root)},
                          tmp_path / "serve.log").wait_ready()
    yield server, root
    server.stop()


def test_a_multi_model_directory_that_goes_away_keeps_serving_and_reloads_fail_clearly(multi_server):
    server, root = multi_server
    for name in ("kept", "removed", "unreadable"):
        response = requests.post(server.url + "/models", json={"model_name": name, "url": str(root / name / "model")})
        assert response.status_code == 200, response.text
    break_directory(root / "removed" / "model", "removed")
    break_directory(root / "unreadable" / "model", "unreadable")
    for name in ("kept", "removed", "unreadable"):
        response = requests.post(f"{server.url}/models/{name}/invoke", data=ROW, headers={"Content-Type": "text/csv"})
        assert response.status_code == 200
        assert requests.delete(f"{server.url}/models/{name}").status_code == 200
    reloads = {name: requests.post(server.url + "/models", json={"model_name": name,
                                                                 "url": str(root / name / "model")})
               for name in ("kept", "removed", "unreadable")}
    assert reloads["kept"].status_code == 200
    assert reloads["removed"].status_code == 404 and "no model directory" in reloads["removed"].json()["error"]
    assert reloads["unreadable"].status_code == 422
    assert "cannot read xgboost-model" in reloads["unreadable"].json()["error"]
    assert requests.get(server.url + "/ping").status_code == 200
