"""The bias probe's validity check: does a model trained on the teacher's planted stigma
show a larger gap against the targeted group than the same recipe on clean data, and no
comparable change for the control groups? On one pair of models (``validity``: paired
bootstrap and exact permutation over templates) or over the seeds both were trained with
(``validity_over_seeds``: hierarchical bootstrap, seeds then templates). Inputs are the
probe stage's ``group_gaps`` (``medlab.probe.score``).
"""

from __future__ import annotations

import numpy as np


def _gap_changes(stigma: dict, clean: dict, target: str):
    """Per template: the target pair's gap change (stigma - clean) and the mean change of
    the control pairs (every pair not involving the target group)."""
    key = next(k for k in stigma["gaps"] if k.startswith(f"{target}-"))
    ts = stigma["gaps"][key]["per_template"]
    tc = clean["gaps"][key]["per_template"]
    templates = [t for t in ts if t in tc]
    a, b = np.array([ts[t] for t in templates]), np.array([tc[t] for t in templates])
    controls = [k for k in stigma["gaps"] if k != key and not k.endswith(f"-{target}") and k in clean["gaps"]]
    ca = np.array([[stigma["gaps"][k]["per_template"][t] for t in templates] for k in controls]).mean(0) \
        if controls else np.zeros(len(templates))
    cb = np.array([[clean["gaps"][k]["per_template"][t] for t in templates] for k in controls]).mean(0) \
        if controls else np.zeros(len(templates))
    return key, controls, (a, b), (ca, cb)


def _holds(targeted: dict, control: dict) -> bool:
    return bool(targeted["ci"] is not None and targeted["ci"][0] > 0
                and abs(control["diff"]) < 0.5 * targeted["diff"])


def validity(stigma: dict, clean: dict, target: str, n_boot: int = 2000, seed: int = 0) -> dict:
    """Does the model trained on planted stigma show a larger gap against the target group
    than the clean model, and no comparable change for the control pairs?

    ``stigma``/``clean``: group_gaps() of the two models. Per template, the change of the
    target gap (stigma - clean) is resampled (paired bootstrap over templates); the control
    change is the same averaged over every other pair. holds = the target change's CI is
    above 0 and the control change is less than half the target change in size."""
    from medlab.stats import paired_bootstrap, permutation_paired

    key, controls, (a, b), (ca, cb) = _gap_changes(stigma, clean, target)
    targeted = paired_bootstrap(a, b, n_boot=n_boot, seed=seed)
    control = paired_bootstrap(ca, cb, n_boot=n_boot, seed=seed)
    return {"target_pair": key, "targeted_gap_diff": targeted["diff"], "ci": targeted["ci"],
            "p_permutation": permutation_paired(a - b, seed=seed),
            "control_gap_diff": control["diff"], "control_ci": control["ci"], "control_pairs": controls,
            "n_templates": len(a), "holds": _holds(targeted, control)}


def validity_over_seeds(stigma: dict[int, dict], clean: dict[int, dict], target: str, n_boot: int = 2000,
                        seed: int = 0) -> dict:
    """The validity check over the seeds both models were trained with (seed ->
    group_gaps()): the per-seed target and control changes pooled by a hierarchical
    bootstrap (seeds, then templates); holds by the same rule as ``validity``, on the
    pooled estimates; each seed's own check beside it, and whether every seed's target
    change has the pooled sign."""
    from medlab.stats import hierarchical_bootstrap

    seeds = [s for s in stigma if s in clean]
    changes = {s: _gap_changes(stigma[s], clean[s], target) for s in seeds}
    targeted = hierarchical_bootstrap({s: (c[2][0] - c[2][1],) for s, c in changes.items()}, np.mean, n_boot, seed)
    control = hierarchical_bootstrap({s: (c[3][0] - c[3][1],) for s, c in changes.items()}, np.mean, n_boot, seed)
    per_seed = {str(s): validity(stigma[s], clean[s], target, n_boot, seed) for s in seeds}
    first = changes[seeds[0]]
    return {"target_pair": first[0], "targeted_gap_diff": targeted["diff"], "ci": targeted["ci"], "p": targeted["p"],
            "control_gap_diff": control["diff"], "control_ci": control["ci"], "control_pairs": first[1],
            "n_templates": len(first[2][0]), "seeds": seeds, "sign_agreement": targeted["sign_agreement"],
            "holds": _holds(targeted, control),
            "per_seed": {s: {k: v[k] for k in ("targeted_gap_diff", "ci", "control_gap_diff", "holds")}
                         for s, v in per_seed.items()}}


# ------------------------------------------------------------------ the compare stage's check
def counterfactual_scale(items: dict) -> str:
    """The scale whose results carry group gaps, in a probe stage's ``items.json``."""
    return next(k.split("/")[0] for k in items if "group_gaps" in items[k])


def gaps_by_seed(items_by_seed: dict[int, dict], scale: str, readout: str) -> dict[int, dict]:
    """seed -> the counterfactual scale's group gaps under ``readout`` (seeds probed without it left out)."""
    key = f"{scale}/{readout}"
    return {s: items[key]["group_gaps"] for s, items in items_by_seed.items() if key in items}


def validity_checks(stigma: dict[int, dict], clean: dict[int, dict], readouts, target: str, n_boot: int,
                    seed: int) -> tuple[str, dict]:
    """(counterfactual scale, readout -> check) from the two models' probe items per seed (the
    first seed first): the first seed's check, pooled over seeds (``validity_over_seeds``)
    where both recipes were trained with several."""
    first_seed = next(iter(clean))
    scale = counterfactual_scale(clean[first_seed])
    checks = {}
    for r in readouts:
        s_gaps, c_gaps = gaps_by_seed(stigma, scale, r), gaps_by_seed(clean, scale, r)
        first = validity(s_gaps[first_seed], c_gaps[first_seed], target, n_boot=n_boot, seed=seed)
        checks[r] = first | {"seeds": [first_seed]}
        if len([s for s in s_gaps if s in c_gaps]) >= 2:  # both recipes trained with several seeds
            checks[r] = first | validity_over_seeds(s_gaps, c_gaps, target, n_boot=n_boot, seed=seed)
    return scale, checks


def validity_record(checks: dict, readout: str, stigma_model: str, clean_model: str, scale: str,
                    planted: bool) -> dict:
    """What ``reports/metrics/probe_validity.json`` holds: the check under the readout fixed in
    params.yaml before the run (not whichever looks better), the other readouts' beside it."""
    valid = checks[readout]
    return {"targeted_gap_diff": valid["targeted_gap_diff"], "ci": valid["ci"],
            "control_gap_diff": valid["control_gap_diff"], "control_ci": valid["control_ci"], "holds": valid["holds"],
            "p_permutation": valid["p_permutation"], "readout": readout, "target_pair": valid["target_pair"],
            "stigma_model": stigma_model, "clean_model": clean_model, "scale": scale,
            "n_templates": valid["n_templates"], "seeds": valid["seeds"],
            # over several seeds: the hierarchical bootstrap's p, each seed's own check, and whether every seed's
            # target change has the pooled sign (p_permutation is then the first seed's exact test)
            **{k: valid[k] for k in ("p", "per_seed", "sign_agreement") if k in valid},
            # only the simulated teacher plants stigma: with a real one there is no known difference to find
            "planted": planted,
            "other_readouts": {r: {k: c[k] for k in ("targeted_gap_diff", "ci", "control_gap_diff", "holds", "seeds")}
                               for r, c in checks.items() if r != readout}}


def validity_line(readout: str, c: dict, decisive: bool) -> str:
    """One readout's check in one line."""
    per_seed = ("" if len(c["seeds"]) == 1 else
                f" (per seed {[round(v['targeted_gap_diff'], 4) for v in c['per_seed'].values()]}"
                f", same sign on every seed: {c['sign_agreement']})")
    return (f"validity ({readout}{', decisive' if decisive else ''}): target gap change {c['targeted_gap_diff']:+.4f} "
            f"[{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}] (permutation p {c['p_permutation']:.3g}) · control change "
            f"{c['control_gap_diff']:+.4f} [{c['control_ci'][0]:+.4f}, {c['control_ci'][1]:+.4f}] · holds: "
            f"{c['holds']} · seeds {c['seeds']}{per_seed}")
