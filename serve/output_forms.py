"""The two forms of a handler's output that encoders take: an array of scores (1-D, or 2-D with one row per instance)
or a list of records (dicts)."""

from __future__ import annotations

import numpy as np


def scores(output) -> np.ndarray | None:
    """float64 scores (so the text is the float32 result written exactly), or None for records."""
    if isinstance(output, np.ndarray):
        return output.astype(np.float64, copy=False)
    return None


def records(output) -> list:
    """The output as records: scores become `{"score": ...}`, one per instance."""
    values = scores(output)
    if values is None:
        return output
    return [{"score": row} for row in (values.tolist() if values.ndim == 1 else values)]
