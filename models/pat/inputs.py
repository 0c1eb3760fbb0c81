"""PAT requests: JSON, CSV and NPY bodies turned into checked instances before anything runs.

JSON   {"instances": [{"activity": [...], "id": ..., "start": "2024-03-04T00:00"}, ...],
        "outputs": ["embedding", "scores", "saliency", "metrics"], "metric_options": {...}}
       An instance may also be a bare list of minutes. A missing minute is null.
CSV    one recording per line; an empty field is a missing minute. NaN/inf text is refused.
NPY    a float array (recordings, minutes); it has no notation for a missing minute, so NaN is refused.
CSV and NPY take `outputs=embedding+metrics` and `start=<ISO 8601>` (every row) from CustomAttributes.

Every error says what was wrong and where (instance numbers count from 1), never which values were sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

import numpy as np

from models.pat.actigraphy import MetricOptions
from serve.errors import BadRequest

OUTPUT_NAMES = ("embedding", "scores", "saliency", "metrics")
MODEL_OUTPUTS = frozenset({"embedding", "scores", "saliency"})
MINUTES_PER_DAY = 1440
MAX_ID_LENGTH = 256
_REQUEST_KEYS = {"instances", "outputs", "metric_options"}
_INSTANCE_KEYS = {"activity", "id", "start"}
_NAME_SEPARATORS = re.compile(r"[\s,+|]+")
_NOT_FINITE_TEXT = re.compile(rb"nan|inf", re.IGNORECASE)
_NUMBER_TYPES = {int, float, type(None)}


@dataclass(frozen=True)
class Instance:
    activity: np.ndarray  # (T,) float64, NaN where a minute is missing
    id: str | int | None = None
    start: datetime | None = None


@dataclass(frozen=True)
class PatRequest:
    instances: list[Instance]
    outputs: tuple[str, ...] | None  # None: the default for the response type
    metric_options: MetricOptions = MetricOptions()


def parse_outputs(value: Any, source: str = "outputs") -> tuple[str, ...]:
    """Output names from a JSON list or a CustomAttributes value ('embedding+metrics', 'embedding metrics')."""
    if isinstance(value, str):
        names = [name for name in _NAME_SEPARATORS.split(value.strip().lower()) if name]
    elif isinstance(value, list) and all(isinstance(name, str) for name in value):
        names = [name.strip().lower() for name in value]
    else:
        raise BadRequest(f"{source} must be a list of names among {', '.join(OUTPUT_NAMES)}")
    if not names:
        raise BadRequest(f"{source} is empty; choose among {', '.join(OUTPUT_NAMES)}")
    if any(name not in OUTPUT_NAMES for name in names):
        raise BadRequest(f"{source} has an unknown name; choose among {', '.join(OUTPUT_NAMES)}")
    return tuple(dict.fromkeys(names))


def parse_start(value: Any, where: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            pass
    raise BadRequest(f"{where}: start must be an ISO 8601 local date and time such as 2024-03-04T00:00")


def _metric_options(value: Any) -> MetricOptions:
    try:
        return MetricOptions.from_mapping(value)
    except (TypeError, ValueError) as error:
        raise BadRequest(f"metric_options: {error}") from None


def _activity(values: Any, where: str) -> np.ndarray:
    if not isinstance(values, list) or not values:
        raise BadRequest(f"{where}: activity must be a non-empty list of numbers, null for a missing minute")
    if not set(map(type, values)) <= _NUMBER_TYPES:
        raise BadRequest(f"{where}: activity must hold only numbers, and null for a missing minute")
    return np.array(values, dtype=np.float64)


def _instance(raw: Any, where: str) -> Instance:
    if isinstance(raw, list):
        return Instance(_activity(raw, where))
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} must be an object with an activity list")
    unknown = sorted(set(raw) - _INSTANCE_KEYS)
    if unknown:
        raise BadRequest(f"{where} has unknown keys; instances take {', '.join(sorted(_INSTANCE_KEYS))}")
    if "activity" not in raw:
        raise BadRequest(f"{where} has no activity")
    identifier = raw.get("id")
    if identifier is not None and (isinstance(identifier, bool) or not isinstance(identifier, str | int)
                                   or len(str(identifier)) > MAX_ID_LENGTH):
        raise BadRequest(f"{where}: id must be a string or an integer of at most {MAX_ID_LENGTH} characters")
    return Instance(_activity(raw["activity"], where), identifier, parse_start(raw.get("start"), where))


def from_json(document: Any, attributes: Mapping[str, str]) -> PatRequest:
    if not isinstance(document, dict) or not isinstance(document.get("instances"), list):
        raise BadRequest('JSON body must be an object with an "instances" list')
    unknown = set(document) - _REQUEST_KEYS
    if unknown:
        raise BadRequest(f"JSON body has unknown keys; it takes {', '.join(sorted(_REQUEST_KEYS))}")
    if not document["instances"]:
        raise BadRequest("instances is empty")
    instances = [_instance(raw, f"instance {number}") for number, raw in enumerate(document["instances"], 1)]
    if "outputs" in document:
        if not isinstance(document["outputs"], list):
            raise BadRequest(f"outputs must be a list of names among {', '.join(OUTPUT_NAMES)}")
        outputs = parse_outputs(document["outputs"])
    else:
        outputs = attributes.get("outputs")
        outputs = None if outputs is None else parse_outputs(outputs, "CustomAttributes outputs")
    return PatRequest(instances, outputs, _metric_options(document.get("metric_options")))


def check_csv_text(body: bytes) -> None:
    """decode_csv reads 'nan'/'inf' as numbers; PAT refuses them (a missing minute is an empty field)."""
    if _NOT_FINITE_TEXT.search(body):
        raise BadRequest("CSV holds NaN or infinity; leave a missing minute's field empty")


def from_rows(rows: np.ndarray, attributes: Mapping[str, str], missing_allowed: bool) -> PatRequest:
    """CSV (missing minutes allowed, as NaN) or NPY rows: one recording per row."""
    if rows.ndim != 2 or 0 in rows.shape:
        raise BadRequest(f"activity array must be 2-D (recordings, minutes) and non-empty, got shape "
                         f"{tuple(rows.shape)}")
    if rows.dtype.kind not in "iuf":
        raise BadRequest("activity array must hold numbers")
    rows = rows.astype(np.float64, copy=False)
    if not missing_allowed and np.isnan(rows).any():
        raise BadRequest("NPY activity holds NaN; send missing minutes as null in JSON or as empty CSV fields")
    start = parse_start(attributes.get("start"), "CustomAttributes")
    outputs = attributes.get("outputs")
    return PatRequest([Instance(row, None, start) for row in rows],
                      None if outputs is None else parse_outputs(outputs, "CustomAttributes outputs"))


@dataclass(frozen=True)
class ModelFacts:
    """What the loaded model allows: checked against each instance."""

    patch_size: int
    week_minutes: int | None  # per-minute standardization fixes the length; None: any multiple of the patch
    max_minutes: int
    counts: bool  # inputs are raw counts (the artifact standardizes them), so they cannot be negative
    has_heads: bool


def resolve_outputs(requested: tuple[str, ...] | None, facts: ModelFacts, embeddings_only: bool) -> tuple[str, ...]:
    """The outputs to compute: the default is embedding (+ scores when the model has heads)."""
    if requested is None:
        return ("embedding",) if embeddings_only or not facts.has_heads else ("embedding", "scores")
    if embeddings_only and requested != ("embedding",):
        raise BadRequest("application/x-npy returns embeddings alone; ask for application/json for "
                         "scores, saliency or metrics")
    if "scores" in requested and not facts.has_heads:
        raise BadRequest("this model has no task heads, so no scores; choose among embedding, saliency, metrics")
    return requested


def check_instance(instance: Instance, number: int, outputs: tuple[str, ...], facts: ModelFacts) -> None:
    """Raise BadRequest when this recording cannot give the requested outputs."""
    where, activity = f"instance {number}", instance.activity
    minutes = activity.size
    present = activity[~np.isnan(activity)]
    if present.size == 0:
        raise BadRequest(f"{where}: every minute is missing")
    if not np.isfinite(present).all():
        raise BadRequest(f"{where}: activity holds infinity")
    if "metrics" in outputs and minutes < MINUTES_PER_DAY:
        raise BadRequest(f"{where}: metrics need at least 24 h ({MINUTES_PER_DAY} minutes), got {minutes}")
    counts = facts.counts or "metrics" in outputs
    if counts and (present < 0).any():
        raise BadRequest(f"{where}: activity counts must not be negative")
    if not MODEL_OUTPUTS.intersection(outputs):
        return
    if facts.week_minutes is not None and minutes != facts.week_minutes:
        raise BadRequest(f"{where}: activity has {minutes} minutes; this model standardizes per minute of a "
                         f"{facts.week_minutes}-minute recording, so it must have exactly that many")
    if minutes % facts.patch_size:
        raise BadRequest(f"{where}: activity has {minutes} minutes, not a multiple of the patch size "
                         f"{facts.patch_size} (a week is 10080)")
    if minutes > facts.max_minutes:
        raise BadRequest(f"{where}: activity has {minutes} minutes; the model takes at most {facts.max_minutes}")
