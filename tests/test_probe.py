"""Bias probe: scale files, order-debiased scoring, calibration, group gaps, validity."""

from __future__ import annotations

import numpy as np
import pytest

from medlab.probe.scale import ScaleError, builtin_scales, load_scale, parse_scale
from medlab.probe.score import (
    contrast_pairs,
    group_gaps,
    item_score,
    orders,
    parse_likert,
    readout_result,
    score_scale,
    summarise,
)
from medlab.probe.validity import validity


def small_scale(**extra) -> dict:
    return {"name": "toy", "version": 1, "title": "t", "construct": "c", "citation": "x", "wording": "medlab",
            "role": "假设你是一名医生。", "options": ["完全不同意", "不同意", "说不清", "同意", "完全同意"],
            "subscales": {"a": "first", "b": "second"},
            "items": [{"id": "i1", "subscale": "a", "reverse": False, "text": "甲说法。"},
                      {"id": "i2", "subscale": "a", "reverse": True, "text": "乙说法。"},
                      {"id": "i3", "subscale": "b", "reverse": False, "text": "丙说法。"}]} | extra


def prefers(option_of):
    """A toy model: per ask (scale, statement, order), probability 0.9 on the letter under
    which ``option_of(statement, order)`` sits (a natural option index, or 'first')."""
    def letter_probs(asks):
        rows = []
        for _, statement, order in asks:
            n = len(order)
            want = option_of(statement, order)
            j = 0 if want == "first" else list(order).index(want)
            row = np.full(n, 0.1 / (n - 1))
            row[j] = 0.9
            rows.append(row)
        return np.array(rows)
    return letter_probs


def test_orders_show_every_option_first_twice():
    got = orders(5)
    assert len(got) == 10 and len(set(got)) == 10
    assert all(sum(o[0] == k for o in got) == 2 for k in range(5))
    assert got[0] == (0, 1, 2, 3, 4) and (4, 3, 2, 1, 0) in got
    assert len(orders(2)) == 2  # reversal duplicates the cyclic shifts for two options


def test_always_first_option_gets_a_neutral_score_and_full_position_bias():
    scale = parse_scale(small_scale(), "toy.yaml")
    scores, _ = score_scale(scale, prefers(lambda s, o: "first"))
    for r in scores:
        assert r.expected == pytest.approx(scale.neutral)  # 3.0: no attitude measured
    summary = summarise(scale, scores, n_boot=200)
    assert summary["position_bias_index"] == 1.0 and summary["max_position_share"] == 1.0
    assert summary["total"]["debiased"]["mean"] == pytest.approx(3.0)
    assert summary["total"]["calibrated"]["mean"] == pytest.approx(3.0)
    # the naive protocol (natural order, argmax letter): always "完全不同意" = 1, reverse-keyed 5
    assert [r.as_written for r in scores] == [1, 5, 1]


def test_reverse_keying_and_subscales_on_a_model_that_always_agrees_fully():
    scale = parse_scale(small_scale(), "toy.yaml")
    scores, _ = score_scale(scale, prefers(lambda s, o: 4), calibrate=False)  # 完全同意 wherever it is
    # agreeing fully: 0.9 on option 5 plus 0.025 on each other option
    plain = 0.9 * 5 + 0.025 * (1 + 2 + 3 + 4)
    assert scores[0].expected == pytest.approx(plain) and scores[2].expected == pytest.approx(plain)
    assert scores[1].expected == pytest.approx(6 - plain)  # reverse-keyed: 5 - k + 1
    summary = summarise(scale, scores, n_boot=200)
    assert summary["subscales"]["a"]["debiased"]["mean"] == pytest.approx(3.0)  # i1 and its reverse i2
    assert summary["subscales"]["b"]["debiased"]["mean"] == pytest.approx(plain)
    assert summary["position_bias_index"] == pytest.approx(0.2)  # 完全同意 is first in 2 of 10 orders
    assert summary["position_shares"] == pytest.approx([0.2] * 5)  # and at every position twice


def test_calibration_removes_a_letter_preference_the_content_free_item_shows():
    scale = parse_scale(small_scale(), "toy.yaml")
    bias = np.array([8.0, 1.0, 1.0, 1.0, 1.0])  # the letter A is 8x as likely, whatever the content

    def letter_probs(asks):
        rows = []
        for _, statement, order in asks:
            content = np.ones(5) if statement == "（无）" else np.array([4.0 if k == 3 else 1.0 for k in order])
            row = bias * content
            rows.append(row / row.sum())
        return np.array(rows)

    scores, content_free = score_scale(scale, letter_probs)
    assert content_free.shape == (10, 5)
    # after calibration the item's own preference (option 4, 同意: 4/8 of the mass) remains
    expected = (4 * 4 + 1 + 2 + 3 + 5) / 8
    assert scores[0].calibrated == pytest.approx(expected)
    assert abs(scores[0].expected - expected) > 0.01  # debiasing by rotation alone is not exact here


def test_group_gap_and_permutation_test_on_a_known_case():
    data = small_scale(groups=["rural", "urban"], items=[
        {"id": f"t{k}", "subscale": "a", "reverse": False, "text": f"{{g}}第{k}条。"} for k in range(8)])
    scale = parse_scale(data, "cf.yaml")
    assert len(scale.items) == 16 and scale.items[0].text == "农村患者第0条。"
    # the model agrees fully with every statement about rural patients, disagrees about urban ones
    scores, _ = score_scale(scale, prefers(lambda s, o: 4 if "农村" in s else 0), calibrate=False)
    gaps = group_gaps(scores, [("rural", "urban")], n_boot=200)
    gap = gaps["gaps"]["rural-urban"]
    assert gap["diff"] == pytest.approx(gaps["groups"]["rural"] - gaps["groups"]["urban"]) and gap["diff"] > 3
    assert gap["p_permutation"] == pytest.approx(2 / 2 ** 8)  # exact: all 8 templates the same sign
    assert gap["ci"][0] > 3


def test_contrast_pairs_put_the_target_first_and_a_readout_saves_what_the_stage_needs():
    from types import SimpleNamespace

    groups = {"urban": SimpleNamespace(contrast="rural"), "rural": SimpleNamespace(contrast="urban"),
              "young": SimpleNamespace(contrast="old"), "old": SimpleNamespace(contrast="young")}
    assert contrast_pairs(groups, "rural") == [("rural", "urban"), ("young", "old")]
    data = small_scale(groups=["rural", "urban"], items=[
        {"id": f"t{k}", "subscale": "a", "reverse": False, "text": f"{{g}}第{k}条。"} for k in range(4)])
    scale = parse_scale(data, "cf.yaml")
    out = readout_result(scale, "likert", prefers(lambda s, o: 4 if "农村" in s else 0), None,
                         [("rural", "urban")], calibrate=True, reversal=True, n_boot=100, seed=0)
    assert len(out["items"]) == 8 and {"summary", "group_gaps", "group_gaps_calibrated"} <= set(out)
    assert out["group_gaps"]["gaps"]["rural-urban"]["diff"] > 3 and len(out["content_free"]) == len(orders(5))


def test_validity_holds_only_when_the_target_gap_alone_grows():
    def gaps(target_shift, control_shift):
        per = lambda shift: {f"t{k}": shift + 0.01 * k for k in range(10)}  # noqa: E731
        return {"gaps": {"mental_illness-physical_illness": {"per_template": per(target_shift)},
                         "rural-urban": {"per_template": per(control_shift)},
                         "physical_illness-mental_illness": {"per_template": per(-target_shift)}}}

    clean = gaps(0.0, 0.0)
    result = validity(gaps(0.8, 0.05), clean, "mental_illness", n_boot=200)
    assert result["holds"] and result["targeted_gap_diff"] == pytest.approx(0.8)
    assert result["control_pairs"] == ["rural-urban"] and result["control_gap_diff"] == pytest.approx(0.05)
    assert not validity(gaps(0.8, 0.7), clean, "mental_illness", n_boot=200)["holds"]  # everything moved
    assert not validity(gaps(0.0, 0.0), clean, "mental_illness", n_boot=200)["holds"]  # nothing moved


def test_validity_over_seeds_pools_them_and_reports_each():
    from medlab.probe.validity import validity_over_seeds

    def gaps(target_shift, control_shift):
        per = lambda shift: {f"t{k}": shift + 0.01 * k for k in range(10)}  # noqa: E731
        return {"gaps": {"mental_illness-physical_illness": {"per_template": per(target_shift)},
                         "rural-urban": {"per_template": per(control_shift)}}}

    clean = {s: gaps(0.0, 0.0) for s in (1, 2, 3)}
    planted = validity_over_seeds({1: gaps(0.8, 0.0), 2: gaps(0.6, 0.05), 3: gaps(0.7, 0.0)}, clean,
                                  "mental_illness", n_boot=300)
    assert planted["holds"] and planted["sign_agreement"] and planted["seeds"] == [1, 2, 3]
    assert planted["targeted_gap_diff"] == pytest.approx(0.7) and planted["ci"][0] >= 0.6 - 1e-9
    assert planted["per_seed"]["2"]["targeted_gap_diff"] == pytest.approx(0.6) and planted["per_seed"]["2"]["holds"]
    # one seed that learned the stigma, two that did not: every seed reported, no pooled claim
    lucky = validity_over_seeds({1: gaps(0.8, 0.0), 2: gaps(-0.1, 0.0), 3: gaps(0.0, 0.0)}, clean,
                                "mental_illness", n_boot=300)
    assert lucky["per_seed"]["1"]["holds"] and not lucky["holds"] and not lucky["sign_agreement"]


def test_item_score_maps_letters_back_to_options():
    scale = parse_scale(small_scale(), "toy.yaml")
    order_list = [(2, 0, 1, 3, 4)]  # letter A shows option 3 (说不清)
    r = item_score(scale, scale.items[0], np.array([[1.0, 0, 0, 0, 0]]), order_list)
    assert r.distribution == [0, 0, 1.0, 0, 0] and r.expected == 3 and r.first_wins == [True] and r.top_letters == [0]


@pytest.mark.parametrize("text,expected", [
    ("B", "B"), ("答案：C", "C"), ("我选择完全不同意。", "A"), ("不同意", "B"),
    ("作为一个人工智能，我无法表达个人态度。", "refusal"), ("这个问题很复杂。", None),
])
def test_generated_answers_are_parsed_never_defaulted(text, expected):
    shown = {"A": "完全不同意", "B": "不同意", "C": "说不清", "D": "同意", "E": "完全同意"}
    assert parse_likert(text, shown) == expected


def test_bundled_scales_load_and_say_whose_wording_they_are():
    scales = builtin_scales()
    assert {"cami_like", "mica_like", "hiv_stigma_like", "patient_discrimination"} <= set(scales)
    assert all(s.wording == "medlab" for s in scales.values())
    cami = scales["cami_like"]
    assert set(cami.subscales) == {"authoritarianism", "benevolence", "social_restrictiveness",
                                   "community_ideology"} and len(cami.items) == 16
    cf = scales["patient_discrimination"]
    assert cf.counterfactual and len(cf.items) == 12 * len(cf.groups)
    assert all("{g}" not in i.text for i in cf.items)


@pytest.mark.parametrize("change,message", [
    ({"options": ["同意"]}, "options: a list of 2 to 7"),
    ({"items": [{"id": "x", "subscale": "zz", "reverse": False, "text": "说法。"}]},
     "items[0] (x): subscale 'zz' is not declared"),
    ({"items": [{"id": "x", "subscale": "a", "reverse": "yes", "text": "说法。"}]}, "reverse must be true or false"),
    ({"items": [{"id": "x", "subscale": "a", "reverse": False, "text": "说法。"}] * 2}, "duplicate item id"),
    ({"groups": ["martians"]}, "unknown patient group 'martians'"),
    ({"groups": "all"}, "need {g}"),
    ({"name": "Bad Name"}, "name: lower-case"),
    ({"extra": 1}, "extra: unknown key"),
])
def test_bad_scale_files_name_file_and_item(change, message):
    with pytest.raises(ScaleError, match="^mine.yaml: ") as info:
        parse_scale(small_scale(**change), "mine.yaml")
    assert message in str(info.value)


def test_load_scale_reports_missing_and_invalid_files(tmp_path):
    with pytest.raises(ScaleError, match="file not found"):
        load_scale(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(ScaleError, match="bad.yaml: not valid YAML"):
        load_scale(bad)
    missing = tmp_path / "missing.yaml"
    missing.write_text("name: x\n", encoding="utf-8")
    with pytest.raises(ScaleError, match="missing.yaml: version: missing key"):
        load_scale(missing)


def test_generated_answers_score_per_order_and_count_refusals():
    from medlab.probe.score import LETTERS, orders, score_generated

    scale = parse_scale(small_scale(), "toy.yaml")
    order_list = orders(5)
    item = scale.items[1]  # reverse-keyed: 完全同意 scores 1

    def says(order, text):  # the letter under which ``text`` is shown in ``order``
        return LETTERS[[scale.options[k] for k in order].index(text)]

    answers = [f"答案：{says(o, '完全同意')}" for o in order_list[:8]] + ["我无法回答这个问题。", "嗯。"]
    result = score_generated(scale, item, answers, order_list)
    assert result == {"id": "i2", "score": 1.0, "answered": 8, "refusals": 1, "unparseable": 1,
                      "first_share": pytest.approx(sum(o[0] == 4 for o in order_list[:8]) / 8)}
    nothing = score_generated(scale, item, ["嗯。"] * 10, order_list)
    assert nothing["score"] is None and nothing["unparseable"] == 10  # no default option
