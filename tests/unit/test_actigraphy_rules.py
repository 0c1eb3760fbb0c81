"""Hand-built cases for the actigraphy rules, options and errors (models/pat/)."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pytest

from models.pat.actigraphy import MetricOptions, compute_metrics
from models.pat.sleep import cole_kripke, period_measures, sadeh, sleep_periods, webster_rescore
from models.pat.wear import choi_nonwear, troiano_nonwear


def seq(*parts) -> np.ndarray:
    """seq((value, minutes), ...) as a float array."""
    return np.concatenate([np.full(n, v, dtype=float) for v, n in parts])


def flagged(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(int), 0]))
    return [(int(a), int(b)) for a, b in edges.reshape(-1, 2)]


ACTIVE = 500.0


@pytest.mark.parametrize("counts, expected", [
    (seq((ACTIVE, 10), (0, 90), (ACTIVE, 10)), [(10, 100)]),
    (seq((ACTIVE, 10), (0, 89), (ACTIVE, 10)), []),
    # a 2-minute spike with 30+ zero minutes on each side stays inside the period
    (seq((ACTIVE, 5), (0, 40), (7, 2), (0, 50), (ACTIVE, 5)), [(5, 97)]),
    # ... but not with 29 zeros before it, nor when it lasts 3 minutes
    (seq((ACTIVE, 5), (0, 29), (7, 1), (0, 70), (ACTIVE, 5)), []),
    (seq((ACTIVE, 5), (0, 40), (7, 3), (0, 50), (ACTIVE, 5)), []),
    # a missing minute ends a run of zeros
    (seq((0, 60), (np.nan, 1), (0, 60)), []),
])
def test_choi(counts, expected):
    assert flagged(choi_nonwear(counts)) == expected


@pytest.mark.parametrize("counts, expected", [
    (seq((ACTIVE, 10), (0, 60), (ACTIVE, 10)), [(10, 70)]),
    (seq((ACTIVE, 10), (0, 59), (ACTIVE, 10)), []),
    # up to 2 minutes of 1..100 counts between zeros stay inside the period
    (seq((ACTIVE, 5), (0, 30), (50, 2), (0, 30), (ACTIVE, 5)), [(5, 67)]),
    (seq((ACTIVE, 5), (0, 30), (50, 3), (0, 30), (ACTIVE, 5)), []),
    # a minute above 100 ends it, and trailing low counts before it are wear
    (seq((ACTIVE, 5), (0, 30), (150, 1), (0, 30), (ACTIVE, 5)), []),
    (seq((ACTIVE, 5), (0, 70), (50, 1), (ACTIVE, 5)), [(5, 75)]),
])
def test_troiano(counts, expected):
    assert flagged(troiano_nonwear(counts)) == expected


@pytest.mark.parametrize("scores, expected", [
    # rules 1-3: the first 1 / 3 / 4 sleep minutes after >= 4 / 10 / 15 wake minutes
    (seq((0, 4), (1, 30)), seq((0, 5), (1, 29))),
    (seq((0, 3), (1, 30)), seq((0, 3), (1, 30))),
    (seq((0, 10), (1, 30)), seq((0, 13), (1, 27))),
    (seq((0, 15), (1, 30)), seq((0, 19), (1, 26))),
    # rule 2 only touches sleep bouts of >= 3 minutes (pyActigraphy); rule 4 catches this one
    (seq((0, 10), (1, 2), (0, 10), (1, 30)), seq((0, 25), (1, 27))),
    # rule 5: <= 10 sleep minutes between >= 20 wake minutes on both sides
    (seq((0, 20), (1, 8), (0, 20), (1, 30)), seq((0, 52), (1, 26))),
    # no rule reaches across missing minutes
    (seq((0, 10), (np.nan, 5), (1, 30)), seq((0, 10), (np.nan, 5), (1, 30))),
    (seq((0, 10), (1, 2), (np.nan, 1), (1, 2), (0, 10), (1, 30)),
     seq((0, 11), (1, 1), (np.nan, 1), (1, 2), (0, 13), (1, 27))),
])
def test_webster_rescoring(scores, expected):
    np.testing.assert_array_equal(webster_rescore(scores), expected)


def test_sadeh_reads_the_next_minute_for_the_log_term():
    """pyActigraphy's quirk: ln(A+1) of minute t+1. With 1000 counts at minute 40, minute 39
    is wake (the textbook's own-minute log would make it sleep) and minute 38 sleep."""
    counts = seq((0, 40), (1000, 1), (0, 40))
    scores = sadeh(counts)
    assert (scores[38], scores[39], scores[40]) == (1.0, 0.0, 0.0)


def test_cole_kripke_needs_d_below_1_for_sleep():
    """106 * 40/30 + 230 * 112/30 = 1000, so D = 1.0 exactly at minute 14: wake."""
    counts = np.zeros(30)
    counts[10], counts[14] = 40, 112
    assert cole_kripke(counts, rescoring=False)[14] == 0.0
    counts[14] = 111
    assert cole_kripke(counts, rescoring=False)[14] == 1.0


def test_scorers_leave_edges_wake_and_missing_minutes_missing():
    counts = seq((0, 30), (np.nan, 3), (0, 30))
    expected_sadeh = seq((0, 5), (1, 20), (0, 5), (np.nan, 3), (0, 5), (1, 20), (0, 5))
    np.testing.assert_array_equal(sadeh(counts), expected_sadeh)
    # Cole-Kripke: 4 wake minutes at each edge, then Webster rule 1 wakes one more.
    expected_ck = seq((0, 5), (1, 21), (0, 4), (np.nan, 3), (0, 5), (1, 21), (0, 4))
    np.testing.assert_array_equal(cole_kripke(counts), expected_ck)


@pytest.mark.parametrize("scores, periods", [
    (seq((0, 30), (1, 200), (0, 30)), [(30, 230)]),
    # short wake and sleep bouts inside a period belong to it
    (seq((0, 30), (1, 100), (0, 5), (1, 3), (0, 2), (1, 100), (0, 30)), [(30, 240)]),
    # a short sleep bout before bedtime stays wake
    (seq((1, 3), (0, 2), (1, 200), (0, 10)), [(5, 205)]),
    (seq((0, 30), (1, 159), (0, 30)), []),
    (seq((0, 30), (1, 100), (np.nan, 1), (1, 100), (0, 30)), []),
    (seq((0, 10), (1, 1441), (0, 10)), []),
])
def test_tudor_locke_periods(scores, periods):
    starts, stops = sleep_periods(scores)
    assert list(zip(starts.tolist(), stops.tolist())) == periods


def test_period_measures():
    scores = seq((0, 30), (1, 100), (0, 5), (1, 3), (0, 2), (1, 100), (0, 30))
    starts, stops = sleep_periods(scores)
    measures = {k: v.tolist() for k, v in period_measures(scores, starts, stops).items()}
    assert measures == {"time_in_bed": [210], "total_sleep_time": [203], "waso": [7],
                        "awakenings": [2]}


def nights_recording(days: int = 3) -> np.ndarray:
    """Active days (200-800 counts) and quiet nights 23:00-07:00 (0-3 counts) from 12:00."""
    rng = np.random.default_rng(7)
    clock = (12 * 60 + np.arange(days * 1440)) % 1440
    night = (clock >= 23 * 60) | (clock < 7 * 60)
    return np.where(night, rng.integers(0, 4, clock.size), rng.integers(200, 800, clock.size))


def test_nights_are_noon_to_noon_with_dates():
    metrics = compute_metrics(nights_recording(), datetime(2024, 3, 1, 12, 0))
    nights = metrics["sleep"]["sadeh"]["nights"]
    assert [n["date"] for n in nights] == ["2024-03-01", "2024-03-02", "2024-03-03"]
    assert [n["night"] for n in nights] == [0, 1, 2]
    for night in nights:
        # Sadeh's 11-minute window holds evening activity until 23:05 (several active
        # minutes make it wake); in the morning a minute or two of activity in the window
        # still scores sleep, so the night ends a little before 07:00. No wake inside.
        assert night["in_bed"] == f"{night['date']}T23:05"
        assert "T06:50" <= night["out_bed"][10:] <= "T07:00"
        assert night["total_sleep_time"] == night["time_in_bed"] >= 465
        assert (night["waso"], night["awakenings"], night["periods"]) == (0, 0, 1)
        assert night["sleep_efficiency"] == 100.0
    sadeh_block = metrics["sleep"]["sadeh"]
    assert sadeh_block["total_sleep_time"] == sum(n["total_sleep_time"] for n in nights)
    assert sadeh_block["sleep_efficiency"] == pytest.approx(
        100.0 * sadeh_block["total_sleep_time"] / sadeh_block["time_in_bed"])


def test_without_start_the_first_minute_is_midnight_and_dates_are_absent():
    counts = nights_recording()
    with_start = compute_metrics(counts, datetime(2024, 3, 1, 0, 0))
    without = compute_metrics(counts, None)
    night = without["sleep"]["sadeh"]["nights"][0]
    assert night["date"] is None and night["in_bed"] is None
    assert night["in_bed_minute"] == with_start["sleep"]["sadeh"]["nights"][0]["in_bed_minute"]
    assert without["l5_onset"] == with_start["l5_onset"]


def test_nonwear_is_reported_and_masked_only_on_request():
    counts = nights_recording().astype(float)
    counts[2000:2200] = 0  # 200 zero minutes in the afternoon: non-wear
    plain = compute_metrics(counts, datetime(2024, 3, 1, 12, 0))
    masked = compute_metrics(counts, datetime(2024, 3, 1, 12, 0),
                             MetricOptions(mask_nonwear=True))
    assert plain["nonwear_minutes"] == masked["nonwear_minutes"] >= 200
    assert plain["wear_minutes"] == counts.size - plain["nonwear_minutes"]
    assert masked["sleep"]["sadeh"]["sleep_minutes"] < plain["sleep"]["sadeh"]["sleep_minutes"]
    assert (masked["sleep"]["sadeh"]["sleep_minutes"] + masked["sleep"]["sadeh"]["wake_minutes"]
            == counts.size - masked["nonwear_minutes"])
    troiano = compute_metrics(counts, None, MetricOptions(nonwear="troiano"))
    assert troiano["settings"]["nonwear"] == "troiano"
    assert troiano["nonwear_minutes"] >= 200


def test_options_change_the_variant():
    counts = nights_recording()
    binarized = compute_metrics(counts, None)
    raw = compute_metrics(counts, None, MetricOptions(binarize=False))
    assert binarized["m10"] <= 1.0 < raw["m10"]
    no_rescoring = compute_metrics(counts, None, MetricOptions(webster_rescoring=False))
    assert (no_rescoring["sleep"]["cole_kripke"]["sleep_minutes"]
            >= binarized["sleep"]["cole_kripke"]["sleep_minutes"])
    half_hour = compute_metrics(counts, None, MetricOptions(bin_minutes=30))
    assert half_hour["interdaily_stability"] != binarized["interdaily_stability"]


def test_result_is_plain_json():
    counts = nights_recording().astype(float)
    counts[100:300] = np.nan
    metrics = compute_metrics(counts.tolist(), datetime(2024, 3, 1, 12, 0))
    assert json.loads(json.dumps(metrics, allow_nan=False)) == metrics
    assert metrics["missing_minutes"] == 200


SECRET = 123457.0


@pytest.mark.parametrize("counts, message", [
    (np.zeros(1439), "shorter than 24 h"),
    (np.zeros((2, 1440)), "flat list"),
    (np.r_[np.zeros(1440), -SECRET], "non-negative"),
    (np.r_[np.zeros(1440), np.inf], "finite"),
    ([str(SECRET)] * 1440, "numbers"),
    ([None] * 1440, "no recorded minute"),
    ([[SECRET, 1.0]] + [0.0] * 1440, "numbers"),
    ([True] * 1440, "numbers"),
])
def test_bad_counts_raise_without_echoing_values(counts, message):
    with pytest.raises(ValueError, match=message) as error:
        compute_metrics(counts, None)
    assert "123457" not in str(error.value)


def test_bad_start_raises():
    with pytest.raises(ValueError, match="start"):
        compute_metrics(np.zeros(1440), "2024-03-01T12:00")


@pytest.mark.parametrize("options, message", [
    ({"nonwear": "magic"}, "nonwear"),
    ({"bin_minutes": 7}, "bin_minutes"),
    ({"bin_minutes": 0}, "bin_minutes"),
    ({"threshold": -1}, "threshold"),
    ({"threshold": float("nan")}, "threshold"),
    ({"binarize": "yes"}, "binarize"),
    ({"mask_nonwear": 1}, "mask_nonwear"),
    ({"colour": "blue"}, "unknown"),
])
def test_bad_options_raise(options, message):
    with pytest.raises(ValueError, match=message):
        MetricOptions.from_mapping(options)


def test_options_from_mapping():
    assert MetricOptions.from_mapping(None) == MetricOptions()
    assert MetricOptions.from_mapping({"binarize": False, "threshold": 10}) == MetricOptions(
        binarize=False, threshold=10)
    with pytest.raises(ValueError, match="JSON object"):
        MetricOptions.from_mapping(["binarize"])
    counts = nights_recording()
    assert compute_metrics(counts, None, {"binarize": False}) == compute_metrics(
        counts, None, MetricOptions(binarize=False))
    with pytest.raises(ValueError, match="unknown"):
        compute_metrics(counts, None, {"colour": "blue"})
