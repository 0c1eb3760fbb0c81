"""Per-request metrics in CloudWatch's embedded metric format (EMF), and the request's log line: one JSON line each
invocation, written to stdout with one system call.

SageMaker ships a container's stdout to CloudWatch Logs, which turns a line with an `_aws` member into metrics, with no
agent and no API call ("Specification: Embedded metric format",
https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html).
The same line is the request's log record (request id, status, latency, model, version, image), so that an invocation
costs one write. With SERVE_METRICS=false the line is written without `_aws` and the metric values, and only at log
level info or debug.

Written here rather than with aws-embedded-metrics: that library reads its own AWS_EMF_* environment, probes the EC2
metadata endpoint or an agent socket unless told otherwise, adds LogGroup/ServiceName/ServiceType dimensions, and
serializes through the json module and a buffered sys.stdout per flush; a request here has a few microseconds to
spare. The records are checked against the specification's schema in the tests.

A line never holds a request's values: only times, counts, status, and names the deploy or the model set.
"""

from __future__ import annotations

import itertools
import os
import secrets
import time
from time import perf_counter
from typing import Any

import orjson

from serve.settings import Settings

MILLISECONDS, COUNT, BYTES = "Milliseconds", "Count", "Bytes"
# Every metric a record may carry, and its unit. The dashboard reads these names.
UNITS = {
    "ReadTime": MILLISECONDS,  # reading the body in the app (the serving front buffered it before)
    "DecodeTime": MILLISECONDS,  # input_fn
    "PredictTime": MILLISECONDS,  # predict_fn
    "EncodeTime": MILLISECONDS,  # output_fn
    "Rows": COUNT,  # instances predicted
    "Requests": COUNT,  # 1 per record
    "Status2xx": COUNT,  # 1 or 0: the status class, as three metrics without a dimension of their own
    "Status4xx": COUNT,
    "Status5xx": COUNT,
    "QueueWait": MILLISECONDS,  # PAT: time the recordings waited for the dynamic batcher
    "BatchSize": COUNT,  # PAT: rows in the largest batch that ran them
    "DeviceMemoryBytes": BYTES,  # PAT on CUDA: device memory the caching allocator holds
}
METRICS = tuple(UNITS)
STAGES = ("ReadTime", "DecodeTime", "PredictTime", "EncodeTime")
_STATUS = {2: "Status2xx", 4: "Status4xx", 5: "Status5xx"}


class Invocation:
    """One invocation's measurements: stage times as they end, and what the handler adds (Request.metrics)."""

    __slots__ = ("started", "last", "values", "identity")

    def __init__(self):
        self.started = self.last = perf_counter()
        self.values: dict[str, float] = {}
        self.identity = None  # serve.provenance.Identity of the model that answered, once known

    def lap(self, stage: str) -> None:
        now = perf_counter()
        self.values[stage] = round((now - self.last) * 1000.0, 3)  # ms to the microsecond
        self.last = now


def rows_of(prediction: Any) -> int | None:
    """Instances in a prediction: an array's first axis, a list's length; None when the form does not say."""
    shape = getattr(prediction, "shape", None)
    if shape:
        return int(shape[0])
    if isinstance(prediction, (list, tuple)):
        return len(prediction)
    return None


class Recorder:
    """Writes each invocation's line. Built once per worker; what never changes is computed here."""

    def __init__(self, settings: Settings, fd: int = 1):
        self.fd = fd
        self.metrics = settings.metrics
        self.enabled = settings.metrics or settings.log_level in ("debug", "info")
        self.dimensions = dict(settings.metric_dimensions)
        self.namespace = settings.metrics_namespace
        # Every dimension the deploy set, and the same without the model: the stage's dashboards read per endpoint
        # and variant, as SageMaker's own metrics are keyed.
        self.dimension_set = [list(self.dimensions)]
        if "ModelName" in self.dimensions and len(self.dimensions) > 1:
            self.dimension_set.append([name for name in self.dimensions if name != "ModelName"])
        self.definitions = {name: {"Name": name, "Unit": unit} for name, unit in UNITS.items()}
        self._prefix = secrets.token_hex(8)  # per worker process: ids unique across workers without a syscall each
        self._counter = itertools.count(1)
        self._clock = (-1, "")  # the last second seen and its text, one tuple so that threads never mix two

    def request_id(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"

    def _time(self, now: float) -> str:
        second, stamp = self._clock
        if int(now) != second:
            second = int(now)
            self._clock = second, (stamp := time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        return f"{stamp}.{int((now - second) * 1000):03d}Z"

    def line(self, invocation: Invocation | None, status: int, identity, request_id: str) -> dict:
        now = time.time()
        entry = {"time": self._time(now), "level": "info", "logger": "serve.request", "message": "invocation",
                 "request_id": request_id, "status": status}
        if invocation is not None:
            entry["latency_ms"] = round((perf_counter() - invocation.started) * 1000.0, 3)
        entry.update(identity.fields)
        if not self.metrics:
            return entry
        values = dict(invocation.values) if invocation is not None else {}
        values["Requests"] = 1
        for klass, name in _STATUS.items():
            values[name] = int(status // 100 == klass)
        entry.update(self.dimensions)
        entry.update(values)
        entry["_aws"] = {"Timestamp": int(now * 1000), "CloudWatchMetrics": [{
            "Namespace": self.namespace, "Dimensions": self.dimension_set,
            "Metrics": [self.definitions[name] for name in values if name in self.definitions]}]}
        return entry

    def write(self, invocation: Invocation | None, status: int, identity, request_id: str) -> None:
        if not self.enabled:
            return
        try:
            os.write(self.fd, orjson.dumps(self.line(invocation, status, identity, request_id),
                                           option=orjson.OPT_APPEND_NEWLINE))
        except OSError:  # stdout closed or full: the answer matters more than its record
            pass
