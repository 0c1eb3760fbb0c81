"""Agreement with pyActigraphy 1.2.2 on its bundled real recordings.

Expected values come from tests/fixtures/pyactigraphy/ (make_fixtures.py says how they
were produced). IS, IV, RA, L5, M10 to 1e-9; onsets within one minute; Sadeh and
Cole-Kripke sleep/wake equal minute by minute.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from models.pat.actigraphy import MetricOptions, compute_metrics
from models.pat.circadian import binarize, circadian_measures
from models.pat.sleep import cole_kripke, sadeh

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pyactigraphy"
RECORDINGS = [f"example_0{n}" for n in range(1, 6)]
TOLERANCE = 1e-9

VALUE_NAMES = {
    "IS": "interdaily_stability",
    "IV": "intradaily_variability",
    "RA": "relative_amplitude",
    "L5": "l5",
    "M10": "m10",
}


@cache
def recording(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def counts_of(fixture: dict, masked: bool = False) -> np.ndarray:
    counts = np.array(fixture["counts"], dtype=float)
    if masked:
        for start, stop in fixture["pyactigraphy_masked"]["mask_runs"]:
            counts[start:stop] = np.nan
    return counts


def clock_minute(fixture: dict) -> int:
    start = datetime.fromisoformat(fixture["start"])
    return start.hour * 60 + start.minute


def minutes_apart(a: int, b: int) -> int:
    apart = (a - b) % 1440
    return min(apart, 1440 - apart)


def assert_circadian(ours: dict, expected: dict) -> None:
    for theirs, name in VALUE_NAMES.items():
        assert ours[name] == pytest.approx(expected[theirs], rel=TOLERANCE, abs=TOLERANCE), theirs
    assert minutes_apart(ours["l5_onset"], expected["L5_onset_minutes"]) <= 1
    assert minutes_apart(ours["m10_onset"], expected["M10_onset_minutes"]) <= 1


def scoring_string(scores: np.ndarray) -> str:
    return "".join(np.where(scores == 1.0, "1", "0"))


@pytest.mark.parametrize("name", RECORDINGS)
@pytest.mark.parametrize("masked", [False, True], ids=["complete", "inactivity-masked"])
@pytest.mark.parametrize("variant, threshold", [("binarized", 4), ("raw", None)])
def test_circadian_measures_match(name, masked, variant, threshold):
    fixture = recording(name)
    counts = counts_of(fixture, masked)
    values = counts if threshold is None else binarize(counts, threshold)
    block = fixture["pyactigraphy_masked" if masked else "pyactigraphy"][variant]
    assert_circadian(circadian_measures(values, clock_minute(fixture), 60), block)


@pytest.mark.parametrize("name", RECORDINGS)
def test_threshold_10_matches(name):
    fixture = recording(name)
    values = binarize(counts_of(fixture), 10)
    assert_circadian(circadian_measures(values, clock_minute(fixture), 60),
                     fixture["pyactigraphy"]["threshold_10"])


@pytest.mark.parametrize("name", RECORDINGS)
def test_30_minute_bins_match(name):
    fixture = recording(name)
    expected = fixture["pyactigraphy"]["bins_30min"]
    counts = counts_of(fixture)
    binarized = circadian_measures(binarize(counts, 4), clock_minute(fixture), 30)
    raw = circadian_measures(counts, clock_minute(fixture), 30)
    assert binarized["interdaily_stability"] == pytest.approx(expected["IS"], rel=TOLERANCE)
    assert binarized["intradaily_variability"] == pytest.approx(expected["IV"], rel=TOLERANCE)
    assert raw["interdaily_stability"] == pytest.approx(expected["IS_raw"], rel=TOLERANCE)
    assert raw["intradaily_variability"] == pytest.approx(expected["IV_raw"], rel=TOLERANCE)


@pytest.mark.parametrize("name", RECORDINGS)
@pytest.mark.parametrize("scorer, key", [
    (sadeh, "sadeh"),
    (cole_kripke, "cole_kripke"),
    (lambda counts: cole_kripke(counts, rescoring=False), "cole_kripke_no_rescoring"),
], ids=["sadeh", "cole_kripke", "cole_kripke_no_rescoring"])
def test_sleep_wake_matches_minute_by_minute(name, scorer, key):
    fixture = recording(name)
    expected = fixture["pyactigraphy"][key]
    ours = scoring_string(scorer(counts_of(fixture)))
    assert len(ours) == len(expected)
    mismatches = [i for i, (a, b) in enumerate(zip(ours, expected)) if a != b]
    assert mismatches == []


@pytest.mark.parametrize("name", RECORDINGS)
def test_sadeh_with_masked_minutes_matches(name):
    """pyActigraphy scores a masked minute 0 and lets NaN make its neighbours wake;
    ours leaves masked minutes NaN and scores the neighbours the same way."""
    fixture = recording(name)
    counts = counts_of(fixture, masked=True)
    scores = sadeh(counts)
    assert np.array_equal(np.isnan(scores), np.isnan(counts))
    assert scoring_string(scores) == fixture["pyactigraphy_masked"]["sadeh"]


@pytest.mark.parametrize("name", RECORDINGS)
def test_compute_metrics_reports_pyactigraphy_defaults(name):
    fixture = recording(name)
    start = datetime.fromisoformat(fixture["start"])
    metrics = compute_metrics(fixture["counts"], start, MetricOptions())
    expected = fixture["pyactigraphy"]
    for theirs, ours in VALUE_NAMES.items():
        assert metrics[ours] == pytest.approx(expected["binarized"][theirs], rel=TOLERANCE)
    for ours, theirs in (("l5_onset", "L5_onset_minutes"), ("m10_onset", "M10_onset_minutes")):
        hours, minutes = map(int, metrics[ours].split(":"))
        assert minutes_apart(hours * 60 + minutes, expected["binarized"][theirs]) <= 1
    assert metrics["sleep"]["sadeh"]["sleep_minutes"] == expected["sadeh"].count("1")
    assert metrics["sleep"]["cole_kripke"]["sleep_minutes"] == expected["cole_kripke"].count("1")
    json.dumps(metrics, allow_nan=False)


def test_example_01_matches_published_reference_numbers():
    """The reference's table (docs notebook / real pyActigraphy run) for example_01.AWD."""
    metrics = compute_metrics(recording("example_01")["counts"], datetime(1918, 1, 23, 13, 58))
    assert metrics["interdaily_stability"] == pytest.approx(0.527656245354158, rel=TOLERANCE)
    assert metrics["intradaily_variability"] == pytest.approx(0.32913524895082263, rel=TOLERANCE)
    assert metrics["relative_amplitude"] == pytest.approx(0.7576503909857768, rel=TOLERANCE)
    assert metrics["l5_onset"] == "02:02" and metrics["m10_onset"] == "08:26"
    assert metrics["sleep"]["sadeh"]["sleep_minutes"] == 9519
    assert metrics["sleep"]["cole_kripke"]["sleep_minutes"] == 9791
