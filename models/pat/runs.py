"""Run-length helpers for per-minute state arrays (sleep/wake, wear, missing).

Everything here works on whole arrays; the run count, not the minute count, sets the size
of the intermediate arrays.
"""

from __future__ import annotations

import numpy as np


class Runs:
    """Maximal runs of equal values in a 1-D integer array."""

    def __init__(self, values: np.ndarray):
        values = np.asarray(values)
        edges = np.flatnonzero(values[1:] != values[:-1]) + 1
        self.starts = np.concatenate(([0], edges))
        self.stops = np.concatenate((edges, [values.size]))
        self.lengths = self.stops - self.starts
        self.values = values[self.starts]

    def previous(self, field: np.ndarray, fill) -> np.ndarray:
        """`field` of the run before each run (`fill` for the first)."""
        return np.concatenate(([fill], field[:-1]))

    def following(self, field: np.ndarray, fill) -> np.ndarray:
        """`field` of the run after each run (`fill` for the last)."""
        return np.concatenate((field[1:], [fill]))


def cover(size: int, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Boolean array of `size`, True inside any of the [start, stop) ranges."""
    delta = np.zeros(size + 1, dtype=np.int64)
    np.add.at(delta, np.clip(starts, 0, size), 1)
    np.add.at(delta, np.clip(stops, 0, size), -1)
    return np.cumsum(delta[:-1]) > 0


def complete_windows(present: np.ndarray, before: int, after: int) -> np.ndarray:
    """True where minutes i-before .. i+after all lie in the recording and are present."""
    size = present.size
    missing_before = np.concatenate(([0], np.cumsum(~present)))
    index = np.arange(size)
    low, high = index - before, index + after + 1
    inside = (low >= 0) & (high <= size)
    complete = np.zeros(size, dtype=bool)
    complete[inside] = missing_before[high[inside]] == missing_before[low[inside]]
    return complete
