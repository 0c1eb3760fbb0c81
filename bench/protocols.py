"""What each system is sent for the same rows, and how its answer is read back into scores.

- `csv`: SageMaker's `text/csv` to /invocations (ours and the naive baseline), answered with one score per line.
- `json`: our `application/json` (`{"instances": [[...]]}`, null for missing), answered `{"predictions": [...]}`.
- `v2`: the Open Inference (KServe V2) REST protocol that MLServer speaks: one FP64 tensor, null for missing (JSON
  has no NaN; MLServer refuses the NaN literal with a 422 and turns null into NaN).

Every body is made from the rows as the CSV body parses (`bench.models.parse_exact`), so all systems see the same
float64 values and must give the same scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import orjson

from bench.models import csv_body, csv_lines


@dataclass(frozen=True)
class Protocol:
    name: str
    path: str
    content_type: str
    accept: str
    body: Callable[[np.ndarray], bytes]  # rows (n, features) -> request body
    scores: Callable[[bytes], np.ndarray]  # response body -> float64 scores

    def single_rows(self, x: np.ndarray) -> list[bytes]:
        return [self.body(x[i:i + 1]) for i in range(len(x))]


def _csv_scores(answer: bytes) -> np.ndarray:
    return np.array([float(line) for line in answer.split()], dtype=np.float64)


def _instances(x: np.ndarray) -> bytes:
    return orjson.dumps({"instances": [[None if np.isnan(v) else float(v) for v in row] for row in x]})


def _predictions(answer: bytes) -> np.ndarray:
    found = orjson.loads(answer)["predictions"]
    return np.array([p["score"] if isinstance(p, dict) else p for p in found], dtype=np.float64)


def _v2_request(x: np.ndarray) -> bytes:
    data = [None if np.isnan(v) else float(v) for v in x.ravel()]
    return orjson.dumps({"inputs": [{"name": "input-0", "shape": list(x.shape), "datatype": "FP64", "data": data}]})


def _v2_scores(answer: bytes) -> np.ndarray:
    return np.asarray(orjson.loads(answer)["outputs"][0]["data"], dtype=np.float64).ravel()


def csv_rows(x: np.ndarray) -> bytes:
    return csv_body(x) if len(x) > 1 else csv_lines(x)[0]


CSV = Protocol("csv", "/invocations", "text/csv", "text/csv", csv_rows, _csv_scores)
JSON = Protocol("json", "/invocations", "application/json", "application/json", _instances, _predictions)


def v2(model_name: str) -> Protocol:
    return Protocol("v2", f"/v2/models/{model_name}/infer", "application/json", "application/json", _v2_request,
                    _v2_scores)
