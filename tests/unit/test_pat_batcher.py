"""The dynamic batcher on a plain numpy batch function: grouping, slicing back, failure isolation, shutdown."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from models.pat.batcher import BatcherClosed, DynamicBatcher


class Recorder:
    """A batch function: per row its sum and the row doubled; rows with a negative value fail the batch.

    `gate` holds the first batch until released, so that later submissions queue up behind it.
    """

    def __init__(self, gate: threading.Event | None = None):
        self.batches: list[tuple[object, list[int]]] = []
        self.gate = gate
        self.started = threading.Event()

    def __call__(self, key, parts):
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        rows = np.concatenate(parts)
        assert all(part.shape[1:] == parts[0].shape[1:] for part in parts)
        self.batches.append((key, [len(part) for part in parts]))
        if (rows < 0).any():
            raise ValueError("negative row")
        return {"sum": rows.sum(axis=1), "double": rows * 2}


def rows(value: float, n: int = 1, width: int = 4) -> np.ndarray:
    return np.full((n, width), value) + np.arange(n)[:, None]


@pytest.fixture
def gated():
    gate = threading.Event()
    recorder = Recorder(gate)
    batcher = DynamicBatcher(recorder, max_rows=8, max_wait_s=0.05)
    yield batcher, recorder, gate
    gate.set()
    batcher.close()


def test_queued_requests_run_as_one_batch_and_each_caller_gets_its_own_rows(gated):
    batcher, recorder, gate = gated
    blocker = batcher.submit("k", rows(0.0))
    assert recorder.started.wait(5)
    futures = [batcher.submit("k", rows(float(10 * i), n=2)) for i in range(1, 4)]
    gate.set()
    blocker.result(5)
    for i, future in enumerate(futures, 1):
        result = future.result(5)
        np.testing.assert_array_equal(result["double"], rows(10.0 * i, n=2) * 2)
        np.testing.assert_array_equal(result["sum"], rows(10.0 * i, n=2).sum(axis=1))
    assert [sizes for _, sizes in recorder.batches] == [[1], [2, 2, 2]]
    assert batcher.stats.batches == 2 and batcher.stats.rows == 7


def test_rows_batch_only_with_rows_of_the_same_key(gated):
    batcher, recorder, gate = gated
    batcher.submit("week", rows(0.0))
    assert recorder.started.wait(5)
    a = batcher.submit("week", rows(1.0))
    b = batcher.submit("day", rows(2.0, width=3))
    c = batcher.submit("week", rows(3.0))
    gate.set()
    assert b.result(5)["double"].shape == (1, 3)
    a.result(5), c.result(5)
    assert recorder.batches[1:] == [("week", [1, 1]), ("day", [1])]


def test_a_failing_request_does_not_fail_the_others_in_its_batch(gated):
    batcher, recorder, gate = gated
    batcher.submit("k", rows(0.0))
    assert recorder.started.wait(5)
    good = [batcher.submit("k", rows(float(i))) for i in range(3)]
    bad = batcher.submit("k", rows(-100.0))
    gate.set()
    with pytest.raises(ValueError, match="negative row"):
        bad.result(5)
    for i, future in enumerate(good):
        np.testing.assert_array_equal(future.result(5)["double"], rows(float(i)) * 2)
    assert batcher.stats.retried_batches == 1


def test_a_request_larger_than_a_batch_is_split_and_reassembled_in_order():
    recorder = Recorder()
    with_limit = DynamicBatcher(recorder, max_rows=lambda key: 3, max_wait_s=0.0)
    try:
        big = np.arange(40.0).reshape(10, 4)
        result = with_limit("k", big, timeout=5)
        np.testing.assert_array_equal(result["double"], big * 2)
        assert all(sum(sizes) <= 3 for _, sizes in recorder.batches)
        assert sum(sum(sizes) for _, sizes in recorder.batches) == 10
    finally:
        with_limit.close()


def test_a_request_fails_as_a_whole_when_one_of_its_pieces_fails():
    batcher = DynamicBatcher(Recorder(), max_rows=2, max_wait_s=0.0)
    try:
        job = np.ones((5, 4))
        job[4, 0] = -1
        with pytest.raises(ValueError, match="negative row"):
            batcher("k", job, timeout=5)
        np.testing.assert_array_equal(batcher("k", np.ones((5, 4)), timeout=5)["sum"], np.full(5, 4.0))
    finally:
        batcher.close()


def test_a_full_batch_runs_without_waiting_out_the_window():
    recorder = Recorder()
    batcher = DynamicBatcher(recorder, max_rows=4, max_wait_s=30.0)
    try:
        started = time.monotonic()
        batcher("k", rows(1.0, n=4), timeout=10)
        assert time.monotonic() - started < 10
    finally:
        batcher.close()


def test_concurrent_callers_each_get_their_own_result():
    recorder = Recorder()
    batcher = DynamicBatcher(recorder, max_rows=16, max_wait_s=0.02)
    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda i: (i, batcher("k", rows(float(i), n=1 + i % 3), timeout=10)), range(64)))
        for i, result in results:
            np.testing.assert_array_equal(result["double"], rows(float(i), n=1 + i % 3) * 2)
        assert batcher.stats.batches < 64  # some batching happened
    finally:
        batcher.close()


def test_wrong_output_length_is_an_error_for_the_caller_not_a_silent_misalignment():
    batcher = DynamicBatcher(lambda key, parts: {"x": np.zeros(1)}, max_rows=8, max_wait_s=0.0)
    try:
        with pytest.raises(RuntimeError, match="has 1 rows for 3 input rows"):
            batcher("k", np.ones((3, 2)), timeout=5)
    finally:
        batcher.close()


def test_close_finishes_queued_work_then_refuses_new_work(gated):
    batcher, recorder, gate = gated
    first = batcher.submit("k", rows(1.0))
    assert recorder.started.wait(5)
    queued = batcher.submit("k", rows(2.0))
    threading.Timer(0.1, gate.set).start()
    batcher.close(timeout=10)
    np.testing.assert_array_equal(first.result(0)["double"], rows(1.0) * 2)
    np.testing.assert_array_equal(queued.result(0)["double"], rows(2.0) * 2)
    with pytest.raises(BatcherClosed):
        batcher.submit("k", rows(3.0))
    assert batcher.closed
    batcher.close()  # twice is fine


def test_close_fails_what_it_cannot_finish_in_time(gated):
    batcher, recorder, gate = gated
    running = batcher.submit("k", rows(1.0))
    assert recorder.started.wait(5)
    queued = batcher.submit("other", rows(2.0))
    batcher.close(timeout=0.1)
    with pytest.raises(BatcherClosed):
        queued.result(5)
    gate.set()
    np.testing.assert_array_equal(running.result(5)["double"], rows(1.0) * 2)


class Fatal(BaseException):
    pass


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_callers_never_hang_when_the_model_thread_dies():
    gate = threading.Event()

    def run(key, parts):
        gate.wait(10)
        raise Fatal()

    batcher = DynamicBatcher(run, max_rows=1, max_wait_s=0.0)
    first = batcher.submit("k", rows(1.0))
    second = batcher.submit("k", rows(2.0))
    gate.set()
    with pytest.raises(Fatal):
        first.result(5)
    with pytest.raises(BatcherClosed):
        second.result(5)
    with pytest.raises(BatcherClosed):
        batcher.submit("k", rows(3.0))
    batcher.close()  # joins the dead thread


def test_empty_submission_is_refused():
    batcher = DynamicBatcher(Recorder(), max_rows=4, max_wait_s=0.0)
    try:
        with pytest.raises(ValueError):
            batcher.submit("k", np.empty((0, 4)))
    finally:
        batcher.close()


class Capacity(Recorder):
    """A batch function with room for `rows` rows: a larger batch raises MemoryError, and so does any batch holding a
    row that starts with `huge` (a row that does not fit even alone)."""

    def __init__(self, rows: int, gate: threading.Event | None = None, huge: float = 1000.0):
        super().__init__(gate)
        self.room, self.huge, self.tried = rows, huge, []

    def __call__(self, key, parts):
        rows = np.concatenate(parts)
        self.tried.append(len(rows))
        if len(rows) > self.room or (rows[:, 0] >= self.huge).any():
            self.started.set()
            raise MemoryError("no room")
        return super().__call__(key, parts)


def test_a_batch_that_does_not_fit_runs_in_halves_and_each_caller_gets_its_own_rows():
    gate = threading.Event()
    capacity = Capacity(rows=2, gate=gate)
    batcher = DynamicBatcher(capacity, max_rows=8, max_wait_s=0.05)
    try:
        blocker = batcher.submit("k", rows(0.0))
        assert capacity.started.wait(5)
        futures = [batcher.submit("k", rows(float(10 * i), n=i)) for i in (1, 2, 3)]  # one batch of 6 rows
        gate.set()
        blocker.result(5)
        for i, future in zip((1, 2, 3), futures):
            np.testing.assert_array_equal(future.result(5)["double"], rows(10.0 * i, n=i) * 2)
        assert capacity.tried[1:] == [6, 3, 1, 2, 3, 1, 2]  # 6 -> 3 + 3 -> (1 + 2) + (1 + 2): no row runs twice
        assert batcher.stats.split_batches == 3 and batcher.stats.rows == 7 and batcher.stats.retried_batches == 0
    finally:
        gate.set()
        batcher.close()


def test_a_row_that_does_not_fit_alone_fails_its_request_and_the_others_are_served():
    capacity = Capacity(rows=4)
    batcher = DynamicBatcher(capacity, max_rows=8, max_wait_s=0.2)
    try:
        futures = [batcher.submit("k", rows(value, n=2)) for value in (1.0, 1000.0, 3.0)]
        with pytest.raises(MemoryError):
            futures[1].result(5)
        for value, future in zip((1.0, 3.0), futures[::2]):
            np.testing.assert_array_equal(future.result(5)["double"], rows(value, n=2) * 2)
        assert batcher.stats.split_batches >= 1  # halves first, down to the row that does not fit
        assert batcher.stats.retried_batches == 1  # then each request alone
        np.testing.assert_array_equal(batcher("k", rows(5.0, n=4), timeout=5)["sum"], rows(5.0, n=4).sum(axis=1))
    finally:
        batcher.close()
