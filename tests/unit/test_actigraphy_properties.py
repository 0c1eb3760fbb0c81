"""Property tests (hypothesis) for the actigraphy measures: constant and all-zero input,
shifts by whole days, runs of missing minutes."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.pat.actigraphy import MetricOptions, compute_metrics
from models.pat.sleep import cole_kripke, sadeh

DAY = 1440
CIRCADIAN = ("interdaily_stability", "intradaily_variability", "relative_amplitude", "l5",
             "m10", "l5_onset", "m10_onset")

lengths = st.integers(min_value=DAY, max_value=4 * DAY)
starts = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2030, 12, 31))
options = st.builds(MetricOptions, binarize=st.booleans(),
                    threshold=st.sampled_from([0, 4, 10.5]),
                    bin_minutes=st.sampled_from([15, 60, 120]),
                    webster_rescoring=st.booleans(),
                    nonwear=st.sampled_from(["choi", "troiano"]),
                    mask_nonwear=st.booleans())


def activity(seed: int, minutes: int) -> np.ndarray:
    """Integer counts with a daily rhythm, quiet spells and zero runs."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi)
    level = 150 * (1 + np.sin(2 * np.pi * np.arange(minutes) / DAY + phase))
    counts = rng.poisson(level * rng.uniform(0.2, 1.5, minutes))
    counts[rng.random(minutes) < 0.2] = 0
    for start in rng.integers(0, minutes, size=rng.integers(0, 4)):
        counts[start:start + rng.integers(30, 200)] = 0
    return counts.astype(float)


def assert_json_safe(metrics: dict) -> None:
    assert json.loads(json.dumps(metrics, allow_nan=False)) == metrics


def without_dates(metrics: dict) -> dict:
    copy = json.loads(json.dumps(metrics))
    for block in copy["sleep"].values():
        for night in block["nights"]:
            night.pop("date"), night.pop("in_bed"), night.pop("out_bed")
    return copy


@settings(max_examples=40, deadline=None)
@given(value=st.integers(min_value=0, max_value=2000), days=st.integers(1, 4),
       start=starts, binarize=st.booleans())
def test_constant_input(value, days, start, binarize):
    minutes = days * DAY
    metrics = compute_metrics(np.full(minutes, float(value)), start,
                              MetricOptions(binarize=binarize))
    assert_json_safe(metrics)
    level = float(value > 4) if binarize else float(value)
    assert metrics["l5"] == pytest.approx(level) and metrics["m10"] == pytest.approx(level)
    assert metrics["l5_onset"] == metrics["m10_onset"] == "00:00"  # all windows tie
    # whole hours of one value: no variance, so IS and IV are undefined
    assert metrics["interdaily_stability"] is None and metrics["intradaily_variability"] is None
    assert metrics["relative_amplitude"] == (0.0 if level else None)
    for scorer, edge in ((sadeh, 5), (cole_kripke, 4)):
        scores = scorer(np.full(minutes, float(value)))
        assert not scores[:edge].any() and not scores[-edge:].any()
        assert len(set(scores[edge + 1: -edge].tolist())) == 1


@settings(max_examples=25, deadline=None)
@given(minutes=lengths, start=starts, nonwear=st.sampled_from(["choi", "troiano"]))
def test_all_zero_input(minutes, start, nonwear):
    metrics = compute_metrics(np.zeros(minutes), start, MetricOptions(nonwear=nonwear))
    assert_json_safe(metrics)
    assert metrics["wear_minutes"] == 0 and metrics["nonwear_minutes"] == minutes
    assert metrics["l5"] == metrics["m10"] == 0.0
    assert metrics["relative_amplitude"] is None
    assert metrics["interdaily_stability"] is None and metrics["intradaily_variability"] is None
    # stillness is sleep except where the window reaches an edge (5 / 4 minutes each side);
    # Webster rule 1 then wakes the first sleep minute after Cole-Kripke's 4 edge minutes
    assert metrics["sleep"]["sadeh"]["sleep_minutes"] == minutes - 10
    assert metrics["sleep"]["cole_kripke"]["sleep_minutes"] == minutes - 9
    masked = compute_metrics(np.zeros(minutes), start,
                             MetricOptions(nonwear=nonwear, mask_nonwear=True))
    assert_json_safe(masked)
    assert all(masked[name] is None for name in CIRCADIAN)
    assert masked["sleep"]["sadeh"]["sleep_minutes"] == 0
    assert masked["sleep"]["cole_kripke"]["nights"] == []


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), minutes=lengths, start=starts,
       days=st.integers(-400, 400), opts=options)
def test_moving_the_start_by_whole_days_changes_only_dates(seed, minutes, start, days, opts):
    counts = activity(seed, minutes)
    before = compute_metrics(counts, start, opts)
    after = compute_metrics(counts, start + timedelta(days=days), opts)
    assert without_dates(after) == without_dates(before)
    for block in ("sadeh", "cole_kripke"):
        for old, new in zip(before["sleep"][block]["nights"], after["sleep"][block]["nights"]):
            assert (datetime.fromisoformat(new["in_bed"]) - datetime.fromisoformat(old["in_bed"])
                    == timedelta(days=days))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), days=st.integers(2, 5), shift=st.integers(1, 4),
       start=starts, binarize=st.booleans())
def test_rotating_whole_days_keeps_the_average_day(seed, days, shift, start, binarize):
    """Moving the first days to the end of a whole-day recording keeps every clock minute's
    values, so IS (same hour-of-day groups), L5, M10, RA and onsets are unchanged."""
    counts = activity(seed, days * DAY)
    rotated = np.roll(counts, -(shift % days) * DAY)
    opts = MetricOptions(binarize=binarize)
    a, b = compute_metrics(counts, start, opts), compute_metrics(rotated, start, opts)
    for name in ("interdaily_stability", "relative_amplitude", "l5", "m10"):
        assert b[name] == pytest.approx(a[name], rel=1e-12, abs=1e-12)
    assert (b["l5_onset"], b["m10_onset"]) == (a["l5_onset"], a["m10_onset"])


gap = st.tuples(st.integers(0, 4 * DAY), st.integers(1, 300))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), minutes=lengths, gaps=st.lists(gap, max_size=4),
       rescoring=st.booleans())
def test_missing_runs_split_the_sleep_scoring(seed, minutes, gaps, rescoring):
    """Each stretch of present minutes is scored as a recording of its own."""
    counts = activity(seed, minutes)
    for start, length in gaps:
        counts[start:start + length] = np.nan
    present = ~np.isnan(counts)
    edges = np.flatnonzero(np.diff(np.r_[0, present.astype(int), 0])).reshape(-1, 2)
    for scorer in (sadeh, lambda c: cole_kripke(c, rescoring=rescoring)):
        whole = scorer(counts)
        assert np.array_equal(np.isnan(whole), ~present)
        for a, b in edges:
            np.testing.assert_array_equal(whole[a:b], scorer(counts[a:b]))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), minutes=lengths, gaps=st.lists(gap, max_size=4),
       start=starts, opts=options)
def test_missing_runs_keep_the_result_consistent(seed, minutes, gaps, start, opts):
    counts = activity(seed, minutes)
    for first, length in gaps:
        counts[first:first + length] = np.nan
    if np.isnan(counts).all():
        counts[0] = 1.0
    metrics = compute_metrics(counts, start, opts)
    assert_json_safe(metrics)
    missing = int(np.isnan(counts).sum())
    assert metrics["missing_minutes"] == missing
    assert metrics["wear_minutes"] + metrics["nonwear_minutes"] + missing == minutes
    masked = metrics["nonwear_minutes"] if opts.mask_nonwear else 0
    for block in metrics["sleep"].values():
        assert block["sleep_minutes"] + block["wake_minutes"] == minutes - missing - masked
        assert block["total_sleep_time"] <= block["sleep_minutes"]
        assert block["time_in_bed"] == block["total_sleep_time"] + block["waso"]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), minutes=lengths, minute=st.integers(0, 4 * DAY - 1),
       bin_minutes=st.sampled_from([30, 60]), binarize=st.booleans())
def test_one_missing_minute_drops_its_whole_bin_from_is_and_iv(seed, minutes, minute,
                                                                bin_minutes, binarize):
    counts = activity(seed, minutes)
    minute %= minutes
    one = counts.copy()
    one[minute] = np.nan
    whole_bin = counts.copy()
    first = minute - minute % bin_minutes
    whole_bin[first:first + bin_minutes] = np.nan
    opts = MetricOptions(binarize=binarize, bin_minutes=bin_minutes)
    a, b = compute_metrics(one, None, opts), compute_metrics(whole_bin, None, opts)
    for name in ("interdaily_stability", "intradaily_variability"):
        assert a[name] == b[name]
