"""Dynamic batching: requests from many threads share one model thread, which runs them in batches.

A caller submits rows (n, T) under a key (rows batch together only under equal keys, e.g. the same length and
options) and gets a Future. One worker thread takes the oldest queued piece, waits up to `max_wait_s` for more
pieces with its key until the batch holds `max_rows(key)` rows, runs `run(key, arrays)` once, and hands each caller
its slice of every output. A job larger than a batch is cut into pieces; its Future resolves when all are done.

Failures stay with their caller: when a batch of several jobs fails, each job is run again on its own, so only the
job that fails alone gets the exception. A batch whose run raises MemoryError is run again in two halves (each split
the same way, down to a single row), so that a batch too large for the memory left still answers; a row that does
not fit alone fails as any other error. `close()` refuses new work, finishes what is queued, and stops the thread.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, InvalidStateError
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Callable, Hashable, Mapping, Sequence

import numpy as np

Outputs = Mapping[str, np.ndarray]
RunBatch = Callable[[Hashable, Sequence[np.ndarray]], Outputs]

log = logging.getLogger("models.pat")


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and takes no more work."""


class JobFuture(Future):
    """A job's Future, which also tells how its rows ran: seconds from submit until its last piece's batch started,
    and the rows of the largest batch that ran them (for the request's metrics)."""

    def __init__(self):
        super().__init__()
        self.queue_wait_s = 0.0
        self.batch_rows = 0


@dataclass(eq=False)
class _Job:
    key: Hashable
    future: JobFuture
    pieces_left: int
    parts: list = field(default_factory=list)  # per piece: its outputs, in piece order
    submitted: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class _Piece:
    job: _Job
    index: int
    rows: np.ndarray


@dataclass
class BatcherStats:
    batches: int = 0
    rows: int = 0
    retried_batches: int = 0
    split_batches: int = 0  # batches run again in halves after a MemoryError


class DynamicBatcher:
    def __init__(self, run: RunBatch, max_rows: int | Callable[[Hashable], int], max_wait_s: float,
                 name: str = "dynamic-batcher"):
        self._run_batch = run
        self._max_rows = max_rows if callable(max_rows) else (lambda key, rows=max_rows: rows)
        self.max_wait_s = max_wait_s
        self.stats = BatcherStats()
        self._queue: list[_Piece] = []
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # --- callers ---------------------------------------------------------------------------------------------------

    def submit(self, key: Hashable, rows: np.ndarray) -> JobFuture:
        """Queue rows (n >= 1 along the first axis); the Future gives {name: (n, ...) array} or the job's error."""
        if rows.ndim < 1 or rows.shape[0] == 0:
            raise ValueError("submit needs at least one row")
        limit = max(1, int(self._max_rows(key)))
        starts = range(0, rows.shape[0], limit)
        job = _Job(key, JobFuture(), pieces_left=len(starts), parts=[None] * len(starts))
        with self._ready:
            if self._closed:
                raise BatcherClosed("the model is shutting down")
            self._queue.extend(_Piece(job, i, rows[start:start + limit]) for i, start in enumerate(starts))
            self._ready.notify()
        return job.future

    def __call__(self, key: Hashable, rows: np.ndarray, timeout: float | None = None) -> dict[str, np.ndarray]:
        return self.submit(key, rows).result(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Stop taking work, finish what is queued (up to `timeout` seconds), fail anything left."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        with self._ready:
            left, self._queue = self._queue, []
        for piece in left:
            self._fail(piece.job, BatcherClosed("the model shut down before this request ran"))

    @property
    def closed(self) -> bool:
        return self._closed

    # --- the worker thread -----------------------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                self._run(*batch)
        finally:  # only an error that is not an Exception gets here with work queued; never leave callers waiting
            with self._ready:
                self._closed = True
                left, self._queue = self._queue, []
            for piece in left:
                self._fail(piece.job, BatcherClosed("the model thread stopped"))

    def _next_batch(self) -> tuple[Hashable, list[_Piece]] | None:
        with self._ready:
            while True:
                while not self._queue and not self._closed:
                    self._ready.wait()
                if not self._queue:
                    return None
                first = self._queue.pop(0)
                if not first.job.future.done():  # skip pieces of a job that already failed
                    break
        key, limit = first.job.key, max(1, int(self._max_rows(first.job.key)))
        taken, rows = [first], len(first.rows)
        deadline = time.monotonic() + self.max_wait_s
        with self._ready:
            while rows < limit:
                rows += self._take_matching(key, limit - rows, taken)
                remaining = deadline - time.monotonic()
                if rows >= limit or self._closed or remaining <= 0:
                    break
                self._ready.wait(remaining)
        return key, taken

    def _take_matching(self, key: Hashable, room: int, taken: list[_Piece]) -> int:
        """Move queued pieces with this key that fit into `taken` (queue order); returns the rows added."""
        added, keep = 0, []
        for piece in self._queue:
            if piece.job.key == key and len(piece.rows) <= room - added and not piece.job.future.done():
                taken.append(piece)
                added += len(piece.rows)
            else:
                keep.append(piece)
        self._queue = keep
        return added

    def _run(self, key: Hashable, pieces: list[_Piece]) -> None:
        jobs = list(dict.fromkeys(piece.job for piece in pieces))
        started, rows = time.monotonic(), sum(len(piece.rows) for piece in pieces)
        for job in jobs:
            job.future.queue_wait_s = started - job.submitted
            job.future.batch_rows = max(job.future.batch_rows, rows)
        try:
            outputs = self._call(key, pieces)
        except Exception as error:
            if len(jobs) == 1:
                self._fail(jobs[0], error)
                return
            self.stats.retried_batches += 1
            for job in jobs:  # find out whose rows fail: each job alone
                self._run(key, [piece for piece in pieces if piece.job is job])
            return
        except BaseException as error:  # the thread is going down: tell this batch's callers why
            for job in jobs:
                self._fail(job, error)
            raise
        offset = 0
        for piece in pieces:
            count = len(piece.rows)
            self._deliver(piece, {name: value[offset:offset + count] for name, value in outputs.items()})
            offset += count

    def _call(self, key: Hashable, pieces: list[_Piece]) -> Outputs:
        return self._call_fitting(key, [piece.rows for piece in pieces])

    def _call_fitting(self, key: Hashable, parts: list[np.ndarray]) -> Outputs:
        """The rows' outputs from one run, or (MemoryError) from one run per half, down to a single row."""
        total = sum(len(part) for part in parts)
        try:
            outputs = self._run_batch(key, parts)
        except MemoryError:
            if total == 1:
                raise
            self.stats.split_batches += 1
            log.warning("a batch did not fit in memory; running it in halves", extra={"rows": total})
            first, second = (self._call_fitting(key, half) for half in _split_rows(parts, total // 2))
            return {name: np.concatenate([first[name], second[name]]) for name in first}
        for name, value in outputs.items():
            if len(value) != total:
                raise RuntimeError(f"batch output {name!r} has {len(value)} rows for {total} input rows")
        self.stats.batches += 1
        self.stats.rows += total
        return outputs

    def _deliver(self, piece: _Piece, outputs: dict[str, np.ndarray]) -> None:
        job = piece.job
        if job.future.done():
            return
        job.parts[piece.index] = outputs
        job.pieces_left -= 1
        if job.pieces_left == 0:
            parts = job.parts
            result = parts[0] if len(parts) == 1 else {
                name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
            with suppress(InvalidStateError):  # the caller cancelled its Future
                job.future.set_result(result)

    @staticmethod
    def _fail(job: _Job, error: BaseException) -> None:
        with suppress(InvalidStateError):
            job.future.set_exception(error)


def _split_rows(parts: list[np.ndarray], at: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The parts' rows before and from row `at`, as two lists of parts (views, no copies)."""
    first, second, start = [], [], 0
    for part in parts:
        cut = min(max(at - start, 0), len(part))
        if cut:
            first.append(part[:cut])
        if cut < len(part):
            second.append(part[cut:])
        start += len(part)
    return first, second
