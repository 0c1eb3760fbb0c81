"""Nonparametric circadian rhythm measures (IS, IV, L5, M10, RA) as pyActigraphy 1.2.2.

Variant (pyActigraphy's, not the textbook or GGIR one):
- bins are sums over `bin_minutes` aligned to the first minute of the recording, and the
  last, partial bin is kept as it is;
- IS = var(mean of bins by time of day) / var(bins), IV = mean(squared successive
  differences) / var(bins), both variances with ddof=1 (IV is the textbook value times
  (n-1)/n);
- L5/M10 come from the minute-resolution average day (clock minute 00:00..23:59), read
  circularly; onsets are the clock minute a window starts at, the earliest on ties.

Missing minutes (NaN) follow pyActigraphy with a mask and `exclude_if_mask` (its default):
a bin with any missing minute is left out of IS and IV, and the average day averages the
minutes present at each clock minute. Deliberate difference: an L5/M10 window that covers a
clock minute with no data on any day is not a candidate (pyActigraphy counts it as 0).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

MINUTES_PER_DAY = 1440
L5_MINUTES = 5 * 60
M10_MINUTES = 10 * 60
# Window sums closer than this (relative) count as ties, so that the earliest wins as in
# pyActigraphy rather than whichever rounding happens to favour.
TIE_TOLERANCE = 1e-12


def binarize(counts: np.ndarray, threshold: float) -> np.ndarray:
    """1 above `threshold`, 0 at or below it, NaN kept."""
    return np.where(np.isnan(counts), np.nan, (counts > threshold).astype(float))


def bin_sums(values: np.ndarray, bin_minutes: int) -> np.ndarray:
    """Sums over consecutive bins from the first minute; NaN where a minute is missing."""
    n_bins = -(-values.size // bin_minutes)
    padded = np.zeros(n_bins * bin_minutes)
    padded[: values.size] = values
    return padded.reshape(n_bins, bin_minutes).sum(axis=1)


def _variance(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(np.var(values, ddof=1)) if values.size > 1 else math.nan


def _ratio(numerator: float, denominator: float) -> float:
    if math.isnan(numerator) or math.isnan(denominator) or denominator == 0:
        return math.nan
    return numerator / denominator


def interdaily_stability(bins: np.ndarray, bin_minutes: int) -> float:
    bins_per_day = MINUTES_PER_DAY // bin_minutes
    slot = np.arange(bins.size) % bins_per_day
    valid = ~np.isnan(bins)
    totals = np.bincount(slot[valid], bins[valid], minlength=bins_per_day)
    counts = np.bincount(slot[valid], minlength=bins_per_day)
    with np.errstate(invalid="ignore", divide="ignore"):
        slot_means = totals / counts
    return _ratio(_variance(slot_means), _variance(bins))


def intradaily_variability(bins: np.ndarray) -> float:
    steps = np.diff(bins) ** 2
    steps = steps[~np.isnan(steps)]
    mean_step = float(steps.mean()) if steps.size else math.nan
    return _ratio(mean_step, _variance(bins))


def average_day(values: np.ndarray, first_clock_minute: int) -> np.ndarray:
    """Mean per clock minute (index 0 = 00:00) over the minutes present; NaN if none."""
    clock = (first_clock_minute + np.arange(values.size)) % MINUTES_PER_DAY
    valid = ~np.isnan(values)
    totals = np.bincount(clock[valid], values[valid], minlength=MINUTES_PER_DAY)
    counts = np.bincount(clock[valid], minlength=MINUTES_PER_DAY)
    with np.errstate(invalid="ignore", divide="ignore"):
        return totals / counts


def extreme_window(profile: np.ndarray, minutes: int, lowest: bool) -> tuple[float, int | None]:
    """Mean of the least (or most) active `minutes` of the circular profile and the clock
    minute the window starts at; (NaN, None) when no window is complete."""
    circular = np.concatenate((profile, profile[: minutes - 1]))
    sums = sliding_window_view(circular, minutes).sum(axis=1)
    valid = ~np.isnan(sums)
    if not valid.any():
        return math.nan, None
    best = sums[valid].min() if lowest else sums[valid].max()
    slack = TIE_TOLERANCE * abs(best)
    near = (sums <= best + slack) if lowest else (sums >= best - slack)
    onset = int(np.flatnonzero(valid & near)[0])
    return float(sums[onset]) / minutes, onset


def relative_amplitude(l5: float, m10: float) -> float:
    return _ratio(m10 - l5, m10 + l5)


def circadian_measures(values: np.ndarray, first_clock_minute: int, bin_minutes: int) -> dict:
    """IS, IV, L5, M10 (with onsets as clock minutes) and RA of per-minute `values`
    (already binarized when asked for)."""
    bins = bin_sums(values, bin_minutes)
    profile = average_day(values, first_clock_minute)
    l5, l5_onset = extreme_window(profile, L5_MINUTES, lowest=True)
    m10, m10_onset = extreme_window(profile, M10_MINUTES, lowest=False)
    return {
        "interdaily_stability": interdaily_stability(bins, bin_minutes),
        "intradaily_variability": intradaily_variability(bins),
        "relative_amplitude": relative_amplitude(l5, m10),
        "l5": l5,
        "m10": m10,
        "l5_onset": l5_onset,
        "m10_onset": m10_onset,
    }
