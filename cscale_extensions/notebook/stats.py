"""Time-series statistics of the workflow notebooks: seasonal anomalies and robust trends.

Why: a calendar-month mean of one to six scenes is no baseline during green-up (a scene on
1 May and one on 31 May differ by phenology, not by anomaly), and a least-squares slope of
four yearly means printed without uncertainty invites over-reading. Here:

- :func:`doy_anomalies`: each scene against the scenes of *other* years within
  ``window_days`` of its day of year (circular), with the number of scenes behind each baseline;
  too few scenes give no anomaly rather than a noisy one.
- :func:`seasonal_by_year`: the mean of a season's scene values per year and how many scenes
  it rests on (the one definition 02, 05 and 06 share).
- :func:`theil_sen`: the Theil–Sen slope with its confidence interval (scipy), robust to the
  odd cloudy or snowy scene left in a series.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def doy_anomalies(series: Any, window_days: int = 16, min_scenes: int = 2) -> Any:
    """DataFrame indexed like ``series`` (a pandas Series with a DatetimeIndex) with columns
    ``value``, ``baseline`` (mean of other years' values within ``window_days`` days of the
    same day of year), ``n_baseline`` (how many) and ``anomaly`` (NaN where ``n_baseline`` is
    below ``min_scenes``)."""
    import numpy as np
    import pandas as pd

    s = series.dropna()
    idx = pd.DatetimeIndex(s.index)
    doy = idx.dayofyear.to_numpy()
    years = idx.year.to_numpy()
    values = s.to_numpy(dtype=float)
    baseline = np.full(len(s), np.nan)
    counts = np.zeros(len(s), dtype=int)
    for i in range(len(s)):
        d = np.abs(doy - doy[i])
        d = np.minimum(d, 365 - d)
        near = (d <= window_days) & (years != years[i])
        counts[i] = int(near.sum())
        if counts[i]:
            baseline[i] = values[near].mean()
    out = pd.DataFrame({"value": values, "baseline": baseline, "n_baseline": counts}, index=s.index)
    out["anomaly"] = (out["value"] - out["baseline"]).where(out["n_baseline"] >= min_scenes)
    return out


def seasonal_by_year(series: Any, months: Iterable[int]) -> Any:
    """DataFrame indexed by year: ``mean`` of the values of the scenes in ``months`` and
    ``n_scenes``; years without such a scene are absent."""
    import pandas as pd

    s = series.dropna()
    idx = pd.DatetimeIndex(s.index)
    s = s[idx.month.isin(list(months))]
    years = pd.DatetimeIndex(s.index).year
    g = s.groupby(years)
    out = pd.DataFrame({"mean": g.mean(), "n_scenes": g.size()})
    out.index.name = "year"
    return out


def decimal_year(index: Any) -> Any:
    """Dates as fractional years (2010-07-02 -> about 2010.5)."""
    import pandas as pd

    idx = pd.DatetimeIndex(index)
    start = pd.to_datetime(idx.year.astype(str) + "-01-01")
    length = pd.to_datetime((idx.year + 1).astype(str) + "-01-01") - start
    return (idx.year + (idx - start) / length).to_numpy(dtype=float)


def theil_sen(x: Any, y: Any, confidence: float = 0.95) -> dict[str, float | int]:
    """Theil–Sen slope of ``y`` against ``x`` with its ``confidence`` interval.

    Returns ``slope``, ``low``, ``high``, ``intercept`` and ``n``; with fewer than three
    points the numbers are NaN (no interval can be had)."""
    import numpy as np
    from scipy.stats import theilslopes

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = int(x.size)
    if n < 3 or np.unique(x).size < 2:
        nan = math.nan
        return {"slope": nan, "low": nan, "high": nan, "intercept": nan, "n": n}
    res = theilslopes(y, x, alpha=confidence)
    return {
        "slope": float(res[0]),
        "intercept": float(res[1]),
        "low": float(res[2]),
        "high": float(res[3]),
        "n": n,
        "confidence": confidence,
    }
