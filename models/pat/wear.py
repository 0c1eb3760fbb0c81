"""Non-wear detection for minute activity counts: Choi (2011) and Troiano (2008).

Both return a boolean array, True for minutes in a non-wear period. Missing minutes (NaN)
are neither zero nor activity: they end a run, so no non-wear period spans them.

- Choi et al. 2011: >= 90 consecutive zero-count minutes; a spike of <= 2 non-zero minutes
  stays inside the period when >= 30 zero minutes lie on each side of it.
- Troiano et al. 2008 (NHANES 2003-06 SAS, published online 2007): >= 60 consecutive
  zero-count minutes; up to 2 consecutive minutes of 1..100 counts stay inside the period
  when zeros follow them; a minute above 100 counts or a third non-zero minute ends it.
"""

from __future__ import annotations

import numpy as np

from models.pat.runs import Runs

ZERO, ACTIVE, MISSING, HIGH = 0, 1, 2, 3

CHOI_MIN_PERIOD, CHOI_SPIKE_MINUTES, CHOI_ZERO_WINDOW = 90, 2, 30
TROIANO_MIN_PERIOD, TROIANO_SPIKE_MINUTES, TROIANO_SPIKE_STOP = 60, 2, 100


def _zero_stretches(runs: Runs, absorbed: np.ndarray, min_period: int) -> np.ndarray:
    """Minutes in stretches of zero runs joined through `absorbed` runs, of >= min_period."""
    zeroish = np.repeat((runs.values == ZERO) | absorbed, runs.lengths)
    stretches = Runs(zeroish.astype(np.int8))
    long = (stretches.values == 1) & (stretches.lengths >= min_period)
    return np.repeat(long, stretches.lengths)


def choi_nonwear(counts: np.ndarray) -> np.ndarray:
    states = np.where(np.isnan(counts), MISSING, np.where(counts > 0, ACTIVE, ZERO))
    runs = Runs(states)
    zero_length = np.where(runs.values == ZERO, runs.lengths, 0)
    absorbed = ((runs.values == ACTIVE) & (runs.lengths <= CHOI_SPIKE_MINUTES)
                & (runs.previous(zero_length, 0) >= CHOI_ZERO_WINDOW)
                & (runs.following(zero_length, 0) >= CHOI_ZERO_WINDOW))
    return _zero_stretches(runs, absorbed, CHOI_MIN_PERIOD)


def troiano_nonwear(counts: np.ndarray) -> np.ndarray:
    states = np.where(np.isnan(counts), MISSING,
                      np.where(counts > TROIANO_SPIKE_STOP, HIGH,
                               np.where(counts > 0, ACTIVE, ZERO)))
    runs = Runs(states)
    absorbed = ((runs.values == ACTIVE) & (runs.lengths <= TROIANO_SPIKE_MINUTES)
                & (runs.previous(runs.values, MISSING) == ZERO)
                & (runs.following(runs.values, MISSING) == ZERO))
    return _zero_stretches(runs, absorbed, TROIANO_MIN_PERIOD)


NONWEAR_ALGORITHMS = {"choi": choi_nonwear, "troiano": troiano_nonwear}
