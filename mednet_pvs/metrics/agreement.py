"""Agreement of per-subject quantities (counts, volumes) across subjects."""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["lin_ccc", "spearman"]


def lin_ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's concordance correlation coefficient (Lin 1989).

    ``2 s_xy / (s_x^2 + s_y^2 + (mean_x - mean_y)^2)`` with population (1/n) moments, as defined by
    Lin. Hand-written: scipy and MONAI do not provide it. NaN for fewer than two pairs or when both
    series are constant and equal-mean (the coefficient is 0/0).
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 2:
        return float("nan")
    covariance = np.mean((x - x.mean()) * (y - y.mean()))
    denominator = x.var() + y.var() + (x.mean() - y.mean()) ** 2
    return float(2 * covariance / denominator) if denominator > 0 else float("nan")


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman's rank correlation and its two-sided p-value (scipy); NaN for < 3 pairs or constant data."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    result = stats.spearmanr(x, y)
    return float(result.statistic), float(result.pvalue)
