"""Per-minute sleep/wake scoring (Sadeh 1994, Cole-Kripke 1992 + Webster) and sleep periods.

Scores are float arrays: 1.0 sleep, 0.0 wake, NaN where the count is missing. Scoring
matches pyActigraphy 1.2.2 `Sadeh()` and `CK(settings='mean')` minute by minute on
complete recordings. A run of missing minutes splits the recording: each stretch of
present minutes is scored as if it were a recording of its own, so a minute whose window
reaches a missing minute is scored wake, exactly as pyActigraphy scores the minutes whose
window reaches the start or the end of the recording.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from models.pat.runs import Runs, complete_windows, cover

SLEEP, WAKE, MISSING = 1, 0, 2

# Sadeh (1994): PS = 7.601 - 0.065 mean_W5 - 1.08 NAT - 0.056 SD_last6 - 0.703 ln(A + 1).
SADEH_OFFSET = 7.601
SADEH_WEIGHTS = np.array([-0.065, -1.08, -0.056, -0.703])
SADEH_HALF_WINDOW = 5

# Cole-Kripke (1992), 60 s "mean activity per minute" setting: D = 0.001 * sum W_j A_(t+j),
# j = -4..+2, A = counts / 30 (pyActigraphy's scaling of per-minute sums to 2 s means).
# pyActigraphy slides a centred 9-wide window whose last two weights are 0, so minutes
# t+3 and t+4 must exist too.
CK_SCALE = 0.001
CK_WEIGHTS = np.array([106.0, 54.0, 58.0, 76.0, 230.0, 74.0, 67.0, 0.0, 0.0])
CK_HALF_WINDOW = 4
CK_COUNT_DIVISOR = 30.0

# Webster et al. (1982) as pyActigraphy's `rescore`: every rule reads the original scoring.
WEBSTER_PRECEDED = ((1, 4), (3, 10), (4, 15))  # (sleep minutes rescored, wake minutes before)
WEBSTER_SURROUNDED = ((6, 10), (10, 20))  # (longest sleep bout, wake minutes on each side)

# Tudor-Locke et al. (2014) sleep periods, as ActiLife: bedtime = first of 5 sleep minutes,
# wake time = first of 10 wake minutes, periods of 160..1440 minutes kept.
BEDTIME_SLEEP_MINUTES = 5
WAKE_TIME_WAKE_MINUTES = 10
PERIOD_MINUTES = (160, 1440)


def _states(scores: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(scores), MISSING, scores).astype(np.int8)


def _finish(sleep: np.ndarray, present: np.ndarray) -> np.ndarray:
    return np.where(present, sleep.astype(float), np.nan)


def sadeh(counts: np.ndarray) -> np.ndarray:
    """Sadeh (1994) as pyActigraphy 1.2.2: NAT counts 50 < A < 100, SD_last6 with ddof=1,
    ln(A + 1) of the *next* minute, sleep when PS > 0."""
    present = ~np.isnan(counts)
    values = np.where(present, counts, 0.0)
    half = SADEH_HALF_WINDOW
    padded = np.pad(values, half)
    window = sliding_window_view(padded, 2 * half + 1)
    mean_w5 = window.sum(axis=1) / window.shape[1]
    nat = ((window > 50) & (window < 100)).sum(axis=1)
    sd_last6 = window[:, : half + 1].std(axis=1, ddof=1)
    log_next = np.log(1.0 + padded[half + 1: half + 1 + values.size])
    terms = np.stack([mean_w5, nat, sd_last6, log_next], axis=1)
    ps = terms @ SADEH_WEIGHTS + SADEH_OFFSET
    scored = complete_windows(present, half, half)
    return _finish(scored & (ps > 0), present)


def cole_kripke(counts: np.ndarray, rescoring: bool = True) -> np.ndarray:
    """Cole-Kripke (1992) 60 s mean-activity weights as pyActigraphy 1.2.2
    `CK(settings='mean')`: sleep when D < 1; Webster rescoring when `rescoring`."""
    present = ~np.isnan(counts)
    activity = np.where(present, counts, 0.0) / CK_COUNT_DIVISOR
    half = CK_HALF_WINDOW
    window = sliding_window_view(np.pad(activity, half), 2 * half + 1)
    d = CK_SCALE * (window @ CK_WEIGHTS)
    scores = _finish(complete_windows(present, half, half) & (d < 1.0), present)
    return webster_rescore(scores) if rescoring else scores


def webster_rescore(scores: np.ndarray) -> np.ndarray:
    """Webster's rules as pyActigraphy's `rescore` (each rule on the original scoring):
    1-3. after >= 4 / 10 / 15 wake minutes, the first 1 / 3 / 4 minutes of a sleep bout at
         least that long become wake;
    4-5. a sleep stretch of <= 6 / 10 minutes between two wake bouts of >= 10 / 20 minutes
         becomes wake.
    Missing minutes end bouts: no rule reaches across them."""
    states = _states(scores)
    runs = Runs(states)
    rescored_starts, rescored_stops = [], []

    before_value = runs.previous(runs.values, MISSING)
    before_length = runs.previous(runs.lengths, 0)
    for sleep_minutes, wake_before in WEBSTER_PRECEDED:
        hit = ((runs.values == SLEEP) & (runs.lengths >= sleep_minutes)
               & (before_value == WAKE) & (before_length >= wake_before))
        rescored_starts.append(runs.starts[hit])
        rescored_stops.append(runs.starts[hit] + sleep_minutes)

    missing_before = np.concatenate(([0], np.cumsum(states == MISSING)))
    for longest_sleep, wake_around in WEBSTER_SURROUNDED:
        long_wake = np.flatnonzero((runs.values == WAKE) & (runs.lengths >= wake_around))
        gap_starts = runs.stops[long_wake[:-1]]
        gap_stops = runs.starts[long_wake[1:]]
        hit = ((gap_stops - gap_starts <= longest_sleep)
               & (missing_before[gap_stops] == missing_before[gap_starts]))
        rescored_starts.append(gap_starts[hit])
        rescored_stops.append(gap_stops[hit])

    rescored = cover(scores.size, np.concatenate(rescored_starts), np.concatenate(rescored_stops))
    return np.where(rescored & (states == SLEEP), 0.0, scores)


def sleep_periods(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tudor-Locke sleep periods as [start, stop) minute indices.

    A period opens at a run of >= 5 sleep minutes and closes before the next run of >= 10
    wake minutes, a missing minute or the end of the recording; shorter runs take the
    state of the run before them. Periods outside 160..1440 minutes are dropped."""
    runs = Runs(_states(scores))
    opens = (runs.values == SLEEP) & (runs.lengths >= BEDTIME_SLEEP_MINUTES)
    closes = (((runs.values == WAKE) & (runs.lengths >= WAKE_TIME_WAKE_MINUTES))
              | (runs.values == MISSING))
    decided = np.flatnonzero(opens | closes)
    last_decided = np.full(runs.values.size, -1)
    last_decided[decided] = decided
    last_decided = np.maximum.accumulate(last_decided)
    asleep = np.where(last_decided >= 0, opens[np.maximum(last_decided, 0)], False)

    blocks = Runs(asleep.astype(np.int8))
    keep = blocks.values == 1
    starts = runs.starts[blocks.starts[keep]]
    stops = runs.stops[blocks.stops[keep] - 1]
    length = stops - starts
    fits = (length >= PERIOD_MINUTES[0]) & (length <= PERIOD_MINUTES[1])
    return starts[fits], stops[fits]


def period_measures(scores: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> dict:
    """Per period: time in bed, total sleep time, WASO (wake minutes in the period) and
    awakenings (wake bouts in the period), all in minutes / counts."""
    asleep = np.concatenate(([0], np.cumsum(scores == 1.0)))
    wake_runs = Runs(_states(scores))
    wake_starts = wake_runs.starts[wake_runs.values == WAKE]
    time_in_bed = stops - starts
    total_sleep = asleep[stops] - asleep[starts]
    awakenings = (np.searchsorted(wake_starts, stops) - np.searchsorted(wake_starts, starts))
    return {
        "time_in_bed": time_in_bed,
        "total_sleep_time": total_sleep,
        "waso": time_in_bed - total_sleep,
        "awakenings": awakenings,
    }
