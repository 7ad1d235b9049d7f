"""How well raters agree: Cohen's kappa for each pair of raters, Krippendorff's alpha for
all of them at once; pure functions over the unblinded rating rows.

* Scores (1-5 per answer and dimension) are ordinal: kappa is *quadratically weighted*
  (a 4 against a 5 costs 1/16 of a 1 against a 5) and alpha uses the ordinal metric. The
  unit of analysis is one answer (unit x label): both answers of a unit are rated.
* Preferences (A better / tie / B better) are nominal: unweighted kappa, nominal alpha.

kappa = (p_o - p_e) / (1 - p_e), with p_o the (weighted) observed agreement and p_e the
agreement expected from the two raters' own marginals (scikit-learn's
``cohen_kappa_score``). alpha = 1 - D_o / D_e over all pairable values, missing ratings
allowed (the ``krippendorff`` package). Both are 1 for perfect agreement, ~0 for chance,
negative for systematic disagreement; None where there is nothing to compare (fewer than
two items rated by both, or no variation at all).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence

import numpy as np

SCALE = (1, 2, 3, 4, 5)
OUTCOMES = ("a", "tie", "b")


def cohen_kappa(a: Sequence, b: Sequence, categories: Sequence, weights: str | None = None) -> float | None:
    """Cohen's kappa of two raters' labels of the same items (``weights``: None, linear, quadratic)."""
    from sklearn.metrics import cohen_kappa_score

    if len(a) != len(b):
        raise ValueError(f"two raters' labels of the same items, got {len(a)} and {len(b)}")
    if len(a) < 2:
        return None
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one shared label: kappa undefined, returned as None below
        value = cohen_kappa_score(list(a), list(b), labels=list(categories), weights=weights)
    return None if not np.isfinite(value) else float(value)


def krippendorff_alpha(matrix: np.ndarray, level: str, domain: Sequence) -> float | None:
    """Krippendorff's alpha of a raters x units matrix (np.nan = not rated)."""
    import krippendorff

    matrix = np.asarray(matrix, dtype=float)
    pairable = (np.sum(~np.isnan(matrix), axis=0) >= 2).sum() if matrix.size else 0
    values = np.unique(matrix[~np.isnan(matrix)]) if matrix.size else []
    if matrix.shape[0] < 2 or pairable == 0 or len(values) < 2:
        return None
    value = krippendorff.alpha(reliability_data=matrix, level_of_measurement=level, value_domain=list(domain))
    return None if not np.isfinite(value) else float(value)


def _matrix(rows: Sequence[dict], raters: Sequence[str], unit_of, value_of) -> tuple[np.ndarray, list]:
    units = sorted({unit_of(r) for r in rows})
    col = {u: j for j, u in enumerate(units)}
    row = {r: i for i, r in enumerate(raters)}
    matrix = np.full((len(raters), len(units)), np.nan)
    for r in rows:
        if r["rater"] in row:
            matrix[row[r["rater"]], col[unit_of(r)]] = value_of(r)
    return matrix, units


def _pairwise_kappas(matrix: np.ndarray, raters: Sequence[str], categories: Sequence,
                     weights: str | None) -> dict[str, dict]:
    out = {}
    for i, j in itertools.combinations(range(len(raters)), 2):
        both = ~np.isnan(matrix[i]) & ~np.isnan(matrix[j])
        out[f"{raters[i]}~{raters[j]}"] = {
            "kappa": cohen_kappa(matrix[i, both].astype(int), matrix[j, both].astype(int), categories, weights),
            "n": int(both.sum())}
    return out


def _summary(matrix: np.ndarray, raters: Sequence[str], level: str, categories: Sequence,
             weights: str | None) -> dict:
    kappas = _pairwise_kappas(matrix, raters, categories, weights)
    known = [k["kappa"] for k in kappas.values() if k["kappa"] is not None]
    return {"alpha": krippendorff_alpha(matrix, level, categories), "alpha_level": level,
            "kappa_pairs": kappas, "kappa_mean": float(np.mean(known)) if known else None,
            "kappa_weights": weights or "none",
            "n_multi": int((np.sum(~np.isnan(matrix), axis=0) >= 2).sum())}


def agreement(score_rows: Sequence[dict], preference_rows: Sequence[dict], raters: Sequence[str],
              dimensions: Sequence[str]) -> dict:
    """Per dimension (answers as units, ordinal) and for the preference (units, nominal):
    alpha over all raters, kappa per rater pair and their mean (Light's kappa), and the
    number of units rated by two or more (``n_multi``: what the statistics rest on)."""
    out = {}
    for d in dimensions:
        rows = [r for r in score_rows if r["dimension"] == d]
        matrix, _ = _matrix(rows, raters, lambda r: (r["unit"], r["model"]), lambda r: r["score"])
        out[d] = _summary(matrix, raters, "ordinal", SCALE, "quadratic")
    code = {o: k for k, o in enumerate(OUTCOMES)}
    matrix, _ = _matrix(preference_rows, raters, lambda r: r["unit"], lambda r: code[r["outcome"]])
    out["preference"] = _summary(matrix, raters, "nominal", range(len(OUTCOMES)), None)
    return out
