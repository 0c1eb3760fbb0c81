"""`Booster.inplace_predict` for dense float arrays, minus its Python overhead.

inplace_predict spends ~40 µs per call in Python (type dispatch over pandas/arrow/cupy/..., JSON built per call, a
class built per call for the result) around one C function, XGBoosterPredictFromDense. For a single row that is
a third of the prediction. `predict` calls that C function with the same arguments, so it returns the same bits;
`agrees` checks exactly that on the loaded booster before the handler relies on it.

It also hands XGBoost a proxy matrix of its own, one per thread and reused: given none, XGBoost builds one per call,
whose context probes the CPU count (stat and read of /sys/fs/cgroup, sched_getaffinity: 11 system calls, about as
long as the prediction of a single row on a 2-vCPU VM, `python -m bench.micro`).
"""

from __future__ import annotations

import ctypes
import json
import threading

import numpy as np
import xgboost as xgb
from xgboost.core import _LIB, _check_call, c_bst_ulong

# The arguments inplace_predict sends for predict_type="value", all trees, NaN as the missing value.
_ARGS = json.dumps({"type": 0, "training": False, "iteration_begin": 0, "iteration_end": 0, "missing": float("nan"),
                    "strict_shape": False, "cache_id": 0}).encode()
_TYPESTR = {np.dtype(np.float64): b"<f8", np.dtype(np.float32): b"<f4"}


class _ProxyMatrix:
    """XGBoost's proxy DMatrix (a reference to the caller's array), freed with the thread that made it."""

    def __init__(self):
        self.handle = ctypes.c_void_p()
        self._free = _LIB.XGDMatrixFree  # held: module globals may be gone when the last thread's proxy is freed
        _check_call(_LIB.XGProxyDMatrixCreate(ctypes.byref(self.handle)))

    def __del__(self):
        if self.handle:
            self._free(self.handle)


_per_thread = threading.local()


def _proxy() -> ctypes.c_void_p:
    proxy = getattr(_per_thread, "proxy", None)
    if proxy is None:
        proxy = _per_thread.proxy = _ProxyMatrix()
    return proxy.handle


def predict(booster: xgb.Booster, matrix) -> np.ndarray | None:
    """Scores for a C-contiguous 2-D float32/float64 array; None for anything else (use inplace_predict)."""
    if type(matrix) is not np.ndarray or matrix.ndim != 2 or not matrix.flags.c_contiguous:
        return None
    typestr = _TYPESTR.get(matrix.dtype)
    if typestr is None:
        return None
    interface = b'{"data": [%d, true], "shape": [%d, %d], "typestr": "%s", "version": 3}' % (
        matrix.ctypes.data, matrix.shape[0], matrix.shape[1], typestr)
    shape, dims, scores = ctypes.POINTER(c_bst_ulong)(), c_bst_ulong(), ctypes.POINTER(ctypes.c_float)()
    _check_call(_LIB.XGBoosterPredictFromDense(booster.handle, interface, _ARGS, _proxy(), ctypes.byref(shape),
                                               ctypes.byref(dims), ctypes.byref(scores)))
    out = np.empty(tuple(shape[i] for i in range(dims.value)), dtype=np.float32)
    # The scores live in the booster's per-thread buffer until its next call: copy them out (a plain memmove; numpy's
    # ctypeslib.as_array builds a ctypes array type per call, three times as long for a single row).
    ctypes.memmove(out.ctypes.data, scores, out.nbytes)
    return out


def agrees(booster: xgb.Booster, num_features: int) -> bool:
    """Whether `predict` gives inplace_predict's exact output on this booster (and this XGBoost version)."""
    rng = np.random.default_rng(0)
    for rows in (1, 7):
        x = rng.normal(scale=10, size=(rows, num_features))
        x[rng.random(x.shape) < 0.2] = np.nan
        for matrix in (x, x.astype(np.float32)):
            try:
                ours = predict(booster, matrix)
            except (xgb.core.XGBoostError, OSError, ValueError, TypeError):
                return False
            theirs = booster.inplace_predict(matrix, validate_features=False)
            if ours is None or ours.dtype != theirs.dtype or ours.shape != theirs.shape or \
                    ours.tobytes() != theirs.tobytes():
                return False
    return True
