"""Uncertainty and comparisons shared by every stage: bootstrap CIs and paired tests.

Pure functions over numpy arrays with fixed seeds, so a report's intervals are
reproducible. Paired tests compare two systems *on the same items*:

* ``paired_bootstrap``: CI of mean(a) - mean(b), resampling items (both columns
  together), plus the share of resamples where the sign flips (a two-sided p);
* ``mcnemar``: exact McNemar test on paired 0/1 outcomes: only the discordant items
  count; under H0 each discordant item favours a or b with probability 1/2, so
  p = two-sided binomial test of (#a-only wins) out of (#discordant);
* ``permutation_paired``: sign-flip permutation test of a mean paired difference;
* ``hierarchical_bootstrap``: a difference measured on several training seeds, each on
  the same items: resample seeds, then items within each drawn seed, so the CI holds
  seed-to-seed variance as well as the test set's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np


def _resampled_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_boot`` resamples of ``values`` with replacement: the very draws (and
    means) of one ``rng.integers(0, n, n)`` per resample, taken as (rows, n) blocks of at
    most ~4M indices (a Python loop of 1,000 small means is ~10 ms per CI, and a model's
    evaluation computes over a hundred)."""
    n = len(values)
    out = np.empty(n_boot)
    block = max(1, 4_000_000 // max(n, 1))
    for start in range(0, n_boot, block):
        rows = min(block, n_boot - start)
        out[start:start + rows] = values[rng.integers(0, n, (rows, n))].mean(axis=1)
    return out


def bootstrap_ci(statistic, *arrays, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                 ) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``statistic(*arrays)`` (resampling rows together);
    None without items or with ``n_boot`` 0 (params: "no CIs")."""
    arrays = [np.asarray(a) for a in arrays]
    n = len(arrays[0])
    if n == 0 or n_boot == 0:
        return None
    rng = np.random.default_rng(seed)
    if statistic is np.mean and len(arrays) == 1:  # the common case, without a Python loop
        values = _resampled_means(arrays[0], n_boot, rng)
        return float(np.quantile(values, alpha / 2)), float(np.quantile(values, 1 - alpha / 2))
    values = []
    for _ in range(n_boot):
        index = rng.integers(0, n, n)
        value = statistic(*(a[index] for a in arrays))
        if value is not None:
            values.append(value)
    if len(values) < n_boot // 2:
        return None
    return float(np.quantile(values, alpha / 2)), float(np.quantile(values, 1 - alpha / 2))


def mean_ci(values, n_boot: int = 1000, seed: int = 0) -> dict:
    """``{"mean", "ci": [lo, hi], "n"}`` of a 0/1 or real-valued column."""
    values = np.asarray(values, dtype=float)
    ci = bootstrap_ci(np.mean, values, n_boot=n_boot, seed=seed)
    return {"mean": float(values.mean()) if len(values) else None, "ci": list(ci) if ci else None,
            "n": int(len(values))}


def paired_bootstrap(a, b, n_boot: int = 2000, seed: int = 0) -> dict:
    """Difference of means a - b on the same items, its CI and a two-sided bootstrap p
    (CI and p None with ``n_boot`` 0)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired columns must have the same length, got {a.shape} and {b.shape}")
    diff = a - b
    if n_boot == 0:
        return {"diff": float(diff.mean()), "ci": None, "p": None, "n": int(len(diff))}
    rng = np.random.default_rng(seed)
    means = _resampled_means(diff, n_boot, rng)
    observed = float(diff.mean())
    # share of resamples on the other side of 0 (doubled): small when the sign is stable
    p = min(1.0, 2 * min((means <= 0).mean(), (means >= 0).mean()))
    lo, hi = np.quantile(means, [0.025, 0.975])
    return {"diff": observed, "ci": [float(lo), float(hi)], "p": float(p), "n": int(len(diff))}


def mcnemar(a, b) -> dict:
    """Exact McNemar test of paired 0/1 outcomes (1 = correct)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes must have the same length, got {a.shape} and {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    from scipy.stats import binomtest  # imported here: 0.75 s, and most stages never test

    p = 1.0 if n == 0 else float(binomtest(only_a, n, 0.5).pvalue)
    return {"only_a": only_a, "only_b": only_b, "p": p}


def permutation_paired(diff, n_perm: int = 10000, seed: int = 0) -> float:
    """Two-sided p of mean(diff) != 0 by random sign flips of the paired differences
    (exact enumeration when there are at most 16 pairs)."""
    diff = np.asarray(diff, dtype=float)
    if len(diff) == 0:
        raise ValueError("no paired differences")
    observed = abs(diff.mean())
    if len(diff) <= 16:
        signs = ((np.arange(2 ** len(diff))[:, None] >> np.arange(len(diff))) & 1) * 2 - 1
    else:
        signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_perm, len(diff)))
    means = np.abs((signs * diff).mean(axis=1))
    return float((means >= observed - 1e-12).mean())


def hierarchical_bootstrap(per_seed: Mapping[int, Sequence[np.ndarray]], statistic: Callable[..., float],
                           n_boot: int = 2000, seed: int = 0) -> dict:
    """A statistic measured on each training seed's items, pooled over seeds with a
    two-level bootstrap (Davison & Hinkley's resampling of clusters, then of units).

    ``per_seed``: seed -> arrays whose rows are that seed's items (resampled together,
    e.g. the paired 0/1 outcomes of a and b, or their per-item differences);
    ``statistic(*arrays)`` -> one number for one seed. Estimate = mean over seeds of the
    per-seed statistic. Each resample draws S seeds with replacement and, for each drawn
    seed, its items with replacement, and averages the per-seed statistics: the spread
    then carries both the seed-to-seed variance and the item-sampling variance (a
    resample of items alone would treat one training run as the whole truth). With 3
    seeds there are only 10 distinct seed multisets, so the interval is coarse: that is
    what three seeds can say. p = twice the share of resamples across 0 (as
    ``paired_bootstrap``). ``sign_agreement``: every seed's own estimate has the sign of
    the pooled one (a zero counts as a disagreement)."""
    seeds = sorted(per_seed)
    if not seeds:
        raise ValueError("no seeds")
    units = {s: [np.asarray(a) for a in per_seed[s]] for s in seeds}
    per = {s: float(statistic(*units[s])) for s in seeds}
    estimate = float(np.mean([per[s] for s in seeds]))
    sign = np.sign(estimate)
    out = {"diff": estimate, "per_seed": {str(s): per[s] for s in seeds}, "seeds": seeds,
           "sign_agreement": bool(sign != 0 and all(np.sign(v) == sign for v in per.values())),
           "n": int(min(len(units[s][0]) for s in seeds)), "ci": None, "p": None}
    if n_boot == 0:
        return out
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    for b in range(n_boot):
        drawn = rng.integers(0, len(seeds), len(seeds))
        total = 0.0
        for j in drawn:
            arrays = units[seeds[j]]
            index = rng.integers(0, len(arrays[0]), len(arrays[0]))
            total += statistic(*(a[index] for a in arrays))
        values[b] = total / len(drawn)
    lo, hi = np.quantile(values, [0.025, 0.975])
    out["ci"] = [float(lo), float(hi)]
    out["p"] = float(min(1.0, 2 * min((values <= 0).mean(), (values >= 0).mean())))
    return out
