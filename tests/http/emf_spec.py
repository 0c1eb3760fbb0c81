"""CloudWatch's embedded metric format, as its specification states it, to check the records the server writes.

Source: Amazon CloudWatch User Guide, "Specification: Embedded metric format"
(https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html):
its JSON schema (written out below in this module's words), and the rules the schema cannot say: every reference is a
member of the root node; a metric target is a number or an array of at most 100 numbers; a dimension target is a
string; at most 100 metric definitions per directive; a document is one log event of at most 256 KB.
"""

from __future__ import annotations

import json
import numbers

import jsonschema

UNITS = ("Seconds|Microseconds|Milliseconds|Bytes|Kilobytes|Megabytes|Gigabytes|Terabytes|Bits|Kilobits|Megabits|"
         "Gigabits|Terabits|Percent|Count|Bytes/Second|Kilobytes/Second|Megabytes/Second|Gigabytes/Second|"
         "Terabytes/Second|Bits/Second|Kilobits/Second|Megabits/Second|Gigabits/Second|Terabits/Second|Count/Second|"
         "None")
NAME = {"type": "string", "minLength": 1, "maxLength": 255}
SCHEMA = {
    "type": "object",
    "required": ["_aws"],
    "properties": {"_aws": {
        "type": "object",
        "required": ["Timestamp", "CloudWatchMetrics"],
        "properties": {
            "Timestamp": {"type": "integer"},
            "CloudWatchMetrics": {"type": "array", "items": {
                "type": "object",
                "required": ["Namespace", "Dimensions", "Metrics"],
                "properties": {
                    "Namespace": NAME,
                    "Dimensions": {"type": "array", "minItems": 1,
                                   "items": {"type": "array", "minItems": 0, "maxItems": 30, "items": NAME}},
                    "Metrics": {"type": "array", "maxItems": 100, "items": {
                        "type": "object",
                        "required": ["Name"],
                        "properties": {"Name": NAME, "Unit": {"type": "string", "pattern": f"^({UNITS})$"},
                                       "StorageResolution": {"enum": [1, 60]}}}},
                }}},
        }}},
}
MAX_EVENT_BYTES = 256 * 1024


def check_line(line: str) -> dict:
    """The record on one log line, checked against the specification; AssertionError or ValidationError if not."""
    assert "\n" not in line.strip() and len(line.encode()) <= MAX_EVENT_BYTES
    record = json.loads(line)
    jsonschema.validate(record, SCHEMA)
    for directive in record["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            for name in dimension_set:
                assert isinstance(record.get(name), str), f"dimension {name} has no string target"
        for metric in directive["Metrics"]:
            value = record.get(metric["Name"])
            values = value if isinstance(value, list) else [value]
            assert len(values) <= 100, f"metric {metric['Name']} has more than 100 values"
            assert all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values), \
                f"metric {metric['Name']} has no numeric target: {value!r}"
    return record


# What the server measures with its own clocks: numbers that carry no request value, but whose many digits can hold
# a test's numeric marker by chance (a Timestamp of 13 digits, a time such as 0.2065859998765518).
CLOCK_FIGURES = ("latency_ms", "ReadTime", "DecodeTime", "PredictTime", "EncodeTime", "QueueWait",
                 "DeviceMemoryBytes")


def without_clock_figures(logs: str) -> str:
    """The log text with each JSON line's clock figures (and its EMF Timestamp) left out, every other field kept, so
    that searching it for a request's value cannot match a measured time."""
    kept = []
    for line in logs.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            kept.append(line)
            continue
        if isinstance(entry, dict):
            for name in CLOCK_FIGURES:
                if isinstance(entry.get(name), numbers.Number):
                    entry.pop(name)
            if isinstance(entry.get("_aws"), dict):
                entry["_aws"] = {key: value for key, value in entry["_aws"].items() if key != "Timestamp"}
        kept.append(json.dumps(entry))
    return "\n".join(kept)
