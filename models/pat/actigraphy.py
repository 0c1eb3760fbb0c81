"""Actigraphy measures beside the PAT outputs: `compute_metrics(counts, start, options)`.

Input: one activity count per minute (60 s epochs), NaN (JSON null) for a missing minute,
at least 1440 minutes; `start` is the local wall-clock time of the first minute.

Variants (defaults follow pyActigraphy 1.2.2's own defaults; see models/pat/ACTIGRAPHY.md):
- IS, IV, L5, M10, RA (circadian.py): binarized at counts > 4 (`binarize`, `threshold`),
  IS/IV on 60-minute sums aligned to the first minute (`bin_minutes`, a divisor of 1440),
  L5/M10 on the minute-resolution average day; onsets are clock times "HH:MM".
- Sleep/wake (sleep.py): Sadeh (1994) as pyActigraphy `Sadeh()`; Cole-Kripke (1992) 60 s
  mean-activity weights as `CK(settings='mean')`, Webster rescoring on
  (`webster_rescoring`). Sleep periods: Tudor-Locke (2014). A night runs noon to noon and
  holds the periods that start in it.
- Non-wear (wear.py): Choi 2011 (`nonwear="choi"`) or Troiano 2008 (`"troiano"`), always
  counted as `wear_minutes`; `mask_nonwear` (off by default, as pyActigraphy) turns
  non-wear minutes into missing ones before every other measure.

Missing minutes: never imputed. IS/IV leave out any bin with a missing minute; the average
day averages what is present at each clock minute; each stretch of present minutes is
scored for sleep as a recording of its own (minutes whose scoring window reaches a gap are
wake, as at the ends of a recording) and missing minutes are neither sleep nor wake; sleep
periods stop at a gap. Without `start`, the first minute is taken as 00:00 and dates are
left out. The result holds only JSON types: an undefined value (for instance IS of a
constant recording, whose variance is 0) is None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from models.pat.circadian import MINUTES_PER_DAY, binarize, circadian_measures
from models.pat.sleep import cole_kripke, period_measures, sadeh, sleep_periods
from models.pat.wear import NONWEAR_ALGORITHMS

NIGHT_STARTS_AT = 12 * 60  # nights run noon to noon


@dataclass(frozen=True)
class MetricOptions:
    binarize: bool = True
    threshold: float = 4.0
    bin_minutes: int = 60
    webster_rescoring: bool = True
    nonwear: str = "choi"
    mask_nonwear: bool = False

    def __post_init__(self):
        for name in ("binarize", "webster_rescoring", "mask_nonwear"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"option {name} must be true or false")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                or not math.isfinite(self.threshold) or self.threshold < 0:
            raise ValueError("option threshold must be a non-negative number")
        if isinstance(self.bin_minutes, bool) or not isinstance(self.bin_minutes, int) \
                or self.bin_minutes < 1 or MINUTES_PER_DAY % self.bin_minutes:
            raise ValueError("option bin_minutes must be a whole number of minutes dividing 1440")
        if self.nonwear not in NONWEAR_ALGORITHMS:
            raise ValueError(f"option nonwear must be one of: {', '.join(NONWEAR_ALGORITHMS)}")

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any] | None) -> MetricOptions:
        """Options from a request's JSON object; unknown names are an error."""
        if options is None:
            return cls()
        if not isinstance(options, Mapping):
            raise ValueError("metric options must be a JSON object")
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown metric options (known: {', '.join(sorted(known))})")
        return cls(**options)


NOT_NUMBERS = "counts must be numbers, with null for a missing minute"


def _as_counts(counts) -> np.ndarray:
    try:
        array = np.asarray(counts)
        if array.dtype == object:
            array = np.where(array == None, np.nan, array)  # element-wise: None -> NaN
        if array.dtype.kind not in "iufO":
            raise ValueError(NOT_NUMBERS)
        values = array.astype(np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(NOT_NUMBERS) from None
    if values.ndim != 1:
        raise ValueError("counts must be a flat list of per-minute values")
    if values.size < MINUTES_PER_DAY:
        raise ValueError("recording shorter than 24 h: metrics need at least 1440 minutes")
    present = values[~np.isnan(values)]
    if present.size == 0:
        raise ValueError("counts has no recorded minute")
    if not np.all(np.isfinite(present)) or np.any(present < 0):
        raise ValueError("counts must be finite and non-negative")
    return values


def _number(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _clock(minute: int | None) -> str | None:
    return None if minute is None else f"{minute // 60:02d}:{minute % 60:02d}"


def _sleep_block(scores: np.ndarray, first_clock_minute: int, start: datetime | None) -> dict:
    starts, stops = sleep_periods(scores)
    periods = period_measures(scores, starts, stops)
    # Night n starts at the n-th noon from the one at or before the first minute.
    first_night = (first_clock_minute - NIGHT_STARTS_AT) // MINUTES_PER_DAY
    nights = (first_clock_minute + starts - NIGHT_STARTS_AT) // MINUTES_PER_DAY - first_night
    night_ids, first = np.unique(nights, return_index=True)
    last = np.r_[first[1:], nights.size] - 1

    def per_night(name):
        return np.add.reduceat(periods[name], first) if nights.size else np.zeros(0, int)

    totals = {name: per_night(name) for name in periods}
    first_evening = start.date() + timedelta(days=first_night) if start else None
    night_list = []
    for i, night in enumerate(night_ids.tolist()):
        in_bed, out_bed = int(starts[first[i]]), int(stops[last[i]])
        night_list.append({
            "night": night,
            "date": (first_evening + timedelta(days=night)).isoformat() if start else None,
            "in_bed": _timestamp(start, in_bed),
            "out_bed": _timestamp(start, out_bed),
            "in_bed_minute": in_bed,
            "out_bed_minute": out_bed,
            "periods": int(last[i] - first[i] + 1),
            **_summary({name: int(values[i]) for name, values in totals.items()}),
        })
    return {
        "sleep_minutes": int(np.sum(scores == 1.0)),
        "wake_minutes": int(np.sum(scores == 0.0)),
        "periods": int(starts.size),
        **_summary({name: int(values.sum()) for name, values in periods.items()}),
        "nights": night_list,
    }


def _summary(totals: dict) -> dict:
    in_bed = totals["time_in_bed"]
    return {
        "time_in_bed": in_bed,
        "total_sleep_time": totals["total_sleep_time"],
        "sleep_efficiency": 100.0 * totals["total_sleep_time"] / in_bed if in_bed else None,
        "waso": totals["waso"],
        "awakenings": totals["awakenings"],
    }


def _timestamp(start: datetime | None, minute: int) -> str | None:
    if start is None:
        return None
    return (start.replace(second=0, microsecond=0, tzinfo=None)
            + timedelta(minutes=minute)).isoformat(timespec="minutes")


def compute_metrics(counts, start: datetime | None = None,
                    options: MetricOptions | Mapping[str, Any] | None = None) -> dict:
    """Actigraphy measures of a minute-count recording as a JSON-ready dict.

    `options` is a MetricOptions or the request's JSON object of them. Raises ValueError
    (message without data values) for input that is not a flat list of non-negative
    numbers / nulls of at least 1440 minutes, or for bad options."""
    if not isinstance(options, MetricOptions):
        options = MetricOptions.from_mapping(options)
    if start is not None and not isinstance(start, datetime):
        raise ValueError("start must be a date and time")
    values = _as_counts(counts)
    first_clock_minute = start.hour * 60 + start.minute if start else 0

    present = ~np.isnan(values)
    nonwear = NONWEAR_ALGORITHMS[options.nonwear](values)
    if options.mask_nonwear:
        values = np.where(nonwear, np.nan, values)

    npcra_input = binarize(values, options.threshold) if options.binarize else values
    circadian = circadian_measures(npcra_input, first_clock_minute, options.bin_minutes)
    for name in ("l5_onset", "m10_onset"):
        circadian[name] = _clock(circadian[name])
    for name in ("interdaily_stability", "intradaily_variability", "relative_amplitude",
                 "l5", "m10"):
        circadian[name] = _number(circadian[name])

    return {
        **circadian,
        "wear_minutes": int(np.sum(present & ~nonwear)),
        "nonwear_minutes": int(np.sum(nonwear)),
        "missing_minutes": int(np.sum(~present)),
        "recorded_minutes": int(values.size),
        "sleep": {
            "sadeh": _sleep_block(sadeh(values), first_clock_minute, start),
            "cole_kripke": _sleep_block(
                cole_kripke(values, rescoring=options.webster_rescoring),
                first_clock_minute, start),
        },
        "settings": asdict(options),
    }
