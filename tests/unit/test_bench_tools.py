"""The benchmark's own tools: the bodies each protocol is sent, strace summaries, the CSV hard cases."""

from __future__ import annotations

import numpy as np
import orjson

from bench import micro, protocols, syscalls

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
