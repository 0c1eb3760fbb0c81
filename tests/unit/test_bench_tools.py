"""The benchmark's own tools: the bodies each protocol is sent, strace summaries, the CSV hard cases, the CPU record,
issue 20's goals, the first-request and CPU-split measures and the lean baseline."""

from __future__ import annotations

import json
import time
import numpy as np
import orjson
import pytest

from bench import first_request, machine, micro, paired, protocols, report, syscalls

ROWS = np.array([[1.5, np.nan, -2.25e-7], [0.1, 3.0, np.nan]])


def test_every_protocol_carries_the_same_values_and_missing_ones():
    csv = protocols.CSV.body(ROWS)
    assert csv == b"1.5,,-2.25e-07\n0.1,3,\n"
    assert orjson.loads(protocols.JSON.body(ROWS)) == {"instances": [[1.5, None, -2.25e-7], [0.1, 3.0, None]]}
    v2 = orjson.loads(protocols.v2("m").body(ROWS))["inputs"][0]
    assert v2["shape"] == [2, 3] and v2["datatype"] == "FP64"
    assert v2["data"] == [1.5, None, -2.25e-7, 0.1, 3.0, None]
    assert protocols.CSV.single_rows(ROWS[:1]) == [b"1.5,,-2.25e-07"]


def test_answers_are_read_back_as_scores():
    assert protocols.CSV.scores(b"0.25\n0.5\n").tolist() == [0.25, 0.5]
    assert protocols.JSON.scores(b'{"predictions": [{"score": 0.25}, {"score": 0.5}]}').tolist() == [0.25, 0.5]
    answer = b'{"outputs": [{"name": "predict", "shape": [2, 1], "datatype": "FP32", "data": [0.25, 0.5]}]}'
    assert protocols.v2("m").scores(answer).tolist() == [0.25, 0.5]


def test_strace_summary_becomes_calls_per_request_by_group():
    table = """% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 40.00    0.000400           1       700           futex
 30.00    0.000300           1       300       100 stat
 20.00    0.000200           1       200           sendto
 10.00    0.000100           1       100           madvise
------ ----------- ----------- --------- --------- ----------------
100.00    0.001000           1      1300       100 total
"""
    per_request = syscalls.parse_summary(table, 100)
    assert per_request == {"futex": 7.0, "stat": 3.0, "sendto": 2.0, "madvise": 1.0}
    groups = syscalls.grouped(per_request)
    assert sum(groups.values()) == 13.0 and groups["other"] == 1.0


def test_hard_cases_are_finite_and_parsed_exactly():
    cases = micro.hard_cases(200)
    assert len(cases) == 200 and all(np.isfinite(float(c)) for c in cases)
    assert micro.check_hard_cases(2000) == {"checked": 2000, "differ": 0}


INTEL = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: another model a hybrid CPU may name
flags\t\t: fpu
"""


def test_the_cpu_model_and_its_bf16_flags_come_from_the_first_processor():
    intel = machine.cpu_info(INTEL)
    assert intel["model"] == "Intel(R) Xeon(R) Platinum 8488C" and intel["vendor"] == "GenuineIntel"
    assert intel["amx_bf16"] and intel["avx512_bf16"]
    assert intel["summary"] == "Intel(R) Xeon(R) Platinum 8488C (amx_bf16, avx512_bf16)"
    amd = machine.cpu_info("vendor_id : AuthenticAMD\nmodel name : AMD EPYC 9R14\nflags : avx512f avx512_bf16\n")
    assert (amd["amx_bf16"], amd["avx512_bf16"]) == (False, True)
    assert machine.cpu_info("processor : 0\n")["summary"] == "unknown (no bf16 flags)"


def _server(p50: float, c8: float, ratio_10k: float) -> dict:
    return {"single_row": {"p50_ms": p50}, "load_c8": {"requests_per_s": c8}, "rows_10k": {"ratio_to_floor": ratio_10k}}


def test_ratio_goals_are_medians_of_ratios_within_each_repeat():
    runs = {"example": {"ours": [_server(1.0, 300, 1.1), _server(2.0, 300, 1.3), _server(1.0, 400, 1.2)],
                      "ours-json": [_server(1.5, 250, 1.4)] * 3,
                      # repeat 2 was slow for both: within the repeat ours is still 0.2x
                      "lean": [_server(5.0, 100, 1.5), _server(10.0, 120, 1.5), _server(2.5, 80, 1.5)]}}
    goals = {(g["model"], g["goal"]): g for g in report.ratio_goals(report.summarize(runs))}
    assert goals["example", "single-row p50 / lean naive's"]["note"] == "lean not measured"  # only bench.paired's
    summary = report.summarize(runs)
    # round 2 was slow for both: within the round ours is still 0.2x
    summary["example"].update(paired.summarize({paired.METRIC: {"ours": [1.0, 2.0, 1.0], "lean": [5.0, 10.0, 2.5]},
                                                paired.WRK_METRIC: {"ours": [1.0], "lean": [3.0]}}))
    goals = {(g["model"], g["goal"]): g for g in report.ratio_goals(summary)}
    p50 = goals["example", "single-row p50 / lean naive's"]
    assert (p50["min"], p50["median"], p50["max"], p50["n"]) == (0.2, 0.2, 0.4, 3) and p50["met"] is True
    by_wrk = goals["example", "single-row p50 / lean naive's, by wrk -c1 (information)"]
    assert by_wrk["median"] == 1 / 3 and by_wrk["met"] is None and by_wrk["note"] == "for information"
    c8 = goals["example", "8-connection throughput / lean naive's"]
    assert c8["median"] == 3.0 and c8["met"] is True and c8["higher_is_better"]  # at the limit is met
    assert goals["example", "10,000-row CSV / in-process floor"]["median"] == 1.2
    assert goals["example", "10,000-row JSON / in-process floor"]["met"] is False  # 1.4 > 1.25
    mlserver = goals["example", "single-row p50 / MLServer's"]
    assert mlserver["met"] is None and mlserver["note"] == "mlserver not measured"
    runs["example"]["lean"][0] = _server(5.0, 101, 1.5)  # 2.97x, 2.5x, 5x: the median misses 3x
    runs["large"] = runs["example"]
    goals = {(g["model"], g["goal"]): g for g in report.ratio_goals(report.summarize(runs))}
    assert goals["example", "8-connection throughput / lean naive's"]["met"] is False
    # the issue sets the naive goals on the example model: on the large one they are shown, not judged
    large = goals["large", "8-connection throughput / lean naive's"]
    assert large["met"] is None and large["median"] == 300 / 101 and large["note"].startswith("for information")


def test_first_request_goal_is_the_median_ratio_of_fresh_servers():
    runs = [{"first_ms": f, "steady": {"p50_ms": s}, "ratio": f / s} for f, s in ((3.0, 1.0), (1.5, 1.0), (2.0, 1.0))]
    summary = first_request.summarize(runs)
    assert (summary["min"], summary["median"], summary["max"], summary["met"]) == (1.5, 2.0, 3.0, True)
    assert first_request.summarize(runs[:1])["met"] is False
    goals = report.ratio_goals({}, {"xgboost": {"model": "example", **summary},
                                    "pat": {"model": "PAT-S", "goal": 2.0, "skipped": "--no-pat"}})
    assert [(g["model"], g["met"], g["limit"]) for g in goals] == [("xgboost (example)", True, 2.0),
                                                                   ("pat (PAT-S)", None, 2.0)]
    assert goals[1]["note"] == "--no-pat"


def _run_with_controls(ratio: float, new_connection: float, idle: dict[float, float]) -> dict:
    return {"first_ms": ratio, "steady": {"p50_ms": 1.0}, "ratio": ratio,
            "warm_new_connection": {"p50_ms": new_connection, "ratio": new_connection, "count": 10},
            "after_idle": [{"gap_s": gap, "p50_ms": r, "ratio": r, "count": 5} for gap, r in idle.items()]}


def test_the_warm_server_controls_are_medians_over_repeats_beside_the_goal():
    runs = [_run_with_controls(3.0, 1.2, {0.01: 2.0, 0.1: 4.0}),
            _run_with_controls(1.5, 1.0, {0.1: 3.0, 0.01: 2.5}),  # gaps in another order: matched by gap, not place
            _run_with_controls(1.8, 1.1, {0.01: 2.4, 0.1: 3.6})]
    summary = first_request.summarize(runs)
    assert (summary["median"], summary["met"]) == (1.8, True)  # the goal is still first / steady alone
    controls = summary["controls"]
    assert controls["warm_new_connection"] == {"median": 1.1, "min": 1.0, "max": 1.2, "n": 3}
    assert controls["after_idle"] == [{"gap_s": 0.01, "median": 2.4, "min": 2.0, "max": 2.5, "n": 3},
                                      {"gap_s": 0.1, "median": 3.6, "min": 3.0, "max": 4.0, "n": 3}]
    line = "warm-server controls / steady p50: new connection 1.10x, after 10 ms idle 2.40x, after 100 ms idle 3.60x"
    assert first_request.describe_controls(controls) == line
    goal, = report.ratio_goals({}, {"xgboost": {"model": "example", **summary}})
    assert (goal["median"], goal["met"], goal["note"]) == (1.8, True, line)
    plain = [{k: v for k, v in run.items() if k not in ("warm_new_connection", "after_idle")} for run in runs]
    assert first_request.summarize(plain)["controls"] == {} and "note" not in report.ratio_goals(
        {}, {"xgboost": {"model": "example", **first_request.summarize(plain)}})[0]


def test_the_first_request_keeps_its_own_repeats_in_quick_runs_and_in_the_estimate(monkeypatch):
    import dataclasses

    from bench import suite

    monkeypatch.setattr(suite.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    quick = suite.Plan.quick()
    assert quick.repeats == 1 and quick.first_request_repeats == suite.Plan().first_request_repeats == 9
    more = dataclasses.replace(quick, first_request_repeats=10)
    added = suite.estimate_s(more, [], False, pat=False) - suite.estimate_s(quick, [], False, pat=False)
    assert added == pytest.approx(suite.FIRST_REQUEST_S["xgboost"])
    assert suite.estimate_s(more, [], False, first=False) == suite.estimate_s(quick, [], False, first=False)


def test_paired_rounds_time_every_server_in_turn_alternating_the_order(monkeypatch, tmp_path):
    timed, stopped = [], []

    class Kind:
        protocols = (protocols.CSV,)

        def __init__(self, model_dir, log_dir):
            self.name = type(self).__name__.lower()

        def stop(self):
            stopped.append(self.name)

    class Ours(Kind):
        pass

    class Lean(Kind):
        pass

    def fake(client):
        def p50(server, protocol, bodies, count):
            timed.append((server.name, client, count))
            return {"ours": 1.0, "lean": 4.0}[server.name]
        return p50

    monkeypatch.setattr(paired, "_python_p50_ms", fake("python"))
    monkeypatch.setattr(paired, "_wrk_p50_ms", fake("wrk"))

    class Model:
        name, model_dir = "example", tmp_path

    class Payloads:
        def for_protocol(self, protocol):
            return [b"1,2\n"], b""

    figures = paired.measure(Model(), Payloads(), [Ours, Lean], tmp_path, rounds=3, burst=7)
    assert [name for name, client, _ in timed if client == "python"] == ["ours", "lean", "lean", "ours", "ours", "lean"]
    assert {count for *_, count in timed} == {7} and len(timed) == 12
    assert figures[paired.METRIC] == {"ours": [1.0] * 3, "lean": [4.0] * 3} and stopped == ["ours", "lean"]
    assert paired.summarize(figures)[paired.METRIC]["ours/lean"]["median"] == 0.25


def test_the_lean_baseline_answers_what_the_booster_predicts(tmp_path, monkeypatch):
    import importlib
    import sys

    import xgboost as xgb

    x = np.random.default_rng(0).normal(size=(50, 3))
    booster = xgb.train({"max_depth": 2}, xgb.DMatrix(x, label=x[:, 0] > 0), num_boost_round=5)
    booster.save_model(tmp_path / "model.ubj")
    monkeypatch.setenv("LEAN_MODEL_PATH", str(tmp_path / "model.ubj"))
    monkeypatch.delitem(sys.modules, "bench.baselines.lean_byo", raising=False)
    lean = importlib.import_module("bench.baselines.lean_byo")
    rows = np.array([[0.5, np.nan, -1.0], [2.0, 1.0, 0.25]])
    response = lean.app.test_client().post("/invocations", data=protocols.CSV.body(rows), content_type="text/csv")
    assert response.status_code == 200
    expected = booster.predict(xgb.DMatrix(rows)).tolist()
    assert protocols.CSV.scores(response.data).astype(np.float32).tolist() == expected
    assert lean.app.test_client().post("/invocations", data=b"{}", content_type="application/json").status_code == 415


def test_the_first_request_is_timed_on_a_fresh_server_apart_from_the_steady_ones():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    answered, stopped, seen = [], [], []  # seen: (client port, arrival) per request

    class Cold(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            answered.append(self.headers["Content-Type"])
            seen.append((self.client_address[1], time.monotonic()))
            if len(answered) == 1:
                threading.Event().wait(0.2)  # the cold first request
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"1\n")

        def log_message(self, *args):
            pass

    class Fake:
        def __init__(self):
            self.http = ThreadingHTTPServer(("127.0.0.1", 0), Cold)
            self.port, self.start_s = self.http.server_address[1], 0.01
            threading.Thread(target=self.http.serve_forever, daemon=True).start()

        def stop(self):
            self.http.shutdown()
            self.http.server_close()
            stopped.append(True)

    case = first_request.Case("xgboost", Fake, [b"1,2", b"3,4"], "text/csv", steady=20, warmup=2)
    run = first_request.measure(case, workers=2)
    new, gaps, idle = first_request.NEW_CONNECTIONS, first_request.IDLE_GAPS_S, first_request.IDLE_REQUESTS
    assert stopped == [True] and len(answered) == 2 + 2 + 20 + new + len(gaps) * idle
    assert set(answered) == {"text/csv"}
    assert run["first_ms"] >= 200 and len(run["first_per_connection_ms"]) == 2
    assert run["steady"]["count"] == 20 and run["steady"]["p50_ms"] < 200
    assert run["ratio"] == run["first_ms"] / run["steady"]["p50_ms"]
    # controls, after the steady requests: each on its own new connection, then the kept one after each idle gap
    kept = seen[2][0]
    assert {port for port, _ in seen[2:24]} == {kept}
    controls = seen[24:24 + new]
    assert len({port for port, _ in controls}) == new and kept not in {port for port, _ in controls}
    assert run["warm_new_connection"]["count"] == new
    assert run["warm_new_connection"]["ratio"] == run["warm_new_connection"]["p50_ms"] / run["steady"]["p50_ms"]
    after = seen[24 + new - 1:]  # each idle request, with the request before it
    assert {port for port, _ in after[1:]} == {kept}
    waited = [later - earlier for (_, earlier), (_, later) in zip(after, after[1:])]
    assert [entry["gap_s"] for entry in run["after_idle"]] == list(gaps)
    assert all(w >= gap for w, gap in zip(waited, [g for g in gaps for _ in range(idle)]))
    assert all(entry["count"] == idle and entry["ratio"] == entry["p50_ms"] / run["steady"]["p50_ms"]
               for entry in run["after_idle"])


def test_the_app_cpu_split_runs_requests_through_our_wsgi_app(tmp_path):
    import xgboost as xgb

    from bench import cpu_split

    x = np.random.default_rng(1).normal(size=(40, 4))
    xgb.train({"max_depth": 2}, xgb.DMatrix(x, label=x[:, 0] > 0), num_boost_round=3).save_model(
        tmp_path / "xgboost-model.ubj")
    (tmp_path / "xgboost-model.ubj").rename(tmp_path / "xgboost-model")
    assert 0 < cpu_split.app_cpu_s(tmp_path, [b"1,2,3,4", b"0.5,,1,2"], 50) < 0.1
    with pytest.raises(RuntimeError, match="other than 200"):  # three features where the model takes four: a 400
        cpu_split.app_cpu_s(tmp_path, [b"1,2,3"], 10)


def test_the_stage_split_is_the_median_of_each_stage_over_the_answered_records(tmp_path):
    from bench import stages

    records = [{"message": "invocation", "status": 200, "_aws": {}, "ReadTime": r, "DecodeTime": d,
                "PredictTime": p, "EncodeTime": e} for r, d, p, e in [(1, 2, 3, 4), (3, 4, 5, 6), (2, 3, 4, 5)]]
    records.append({"message": "invocation", "status": 400, "_aws": {}, "ReadTime": 90, "DecodeTime": 90})
    (tmp_path / "ours.log").write_text("\n".join(["not json", '{"message": "listening"}',
                                                   *map(json.dumps, records)]) + "\n")
    (tmp_path / "naive.log").write_text("GET /ping 200\n")
    found = stages.split(sorted(tmp_path.glob("*.log")))
    assert found == {"ours": {"ReadTime": 2, "DecodeTime": 3, "PredictTime": 4, "EncodeTime": 5, "count": 3}}
    stages.plot(found, tmp_path / "stages.png")
    assert (tmp_path / "stages.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
