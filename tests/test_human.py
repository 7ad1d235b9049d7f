"""Human evaluation: blinded packages, the rating page in a real browser, the import's
checks, unblinding, and the agreement statistics against values computed by hand."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from helpers.raters import fill_rating_page

from medlab.human import agreement, package, ratings, summary
from medlab.human.judge import judge_units
from medlab.llm.base import Completion, Decoding
from medlab.llm.cache import CallCache

DIMS = ["accuracy", "helpfulness"]
MODELS = ("alpha_model", "beta_model", "gamma_model")
VOICE = dict(zip(MODELS, "甲乙丙", strict=False))  # each model's answers are marked with its own character, never its name


def fake_answers(n: int = 12) -> dict[str, dict[str, dict]]:
    return {m: {f"q{i:02d}": {"id": f"q{i:02d}", "question": f"问题{i}：麻醉前禁食多久？", "reference": f"参考{i}",
                              "answer": f"{VOICE[m]}的回答 {i}"} for i in range(n)} for m in MODELS}


@pytest.fixture
def exported(tmp_path):
    """Two pairs, 6 units each, 3 shared by both raters; packages written to tmp_path/blind."""
    units, key = package.build_units(fake_answers(), [["alpha_model", "beta_model"], ["alpha_model", "gamma_model"]],
                                     6, seed=7)
    assignment = package.assign(key, ["r1", "r2"], 3, seed=7)
    man = package.manifest(units, key, assignment, DIMS, show_reference=True)
    package.write_packages(tmp_path / "blind", units, man, title="测试评测")
    return units, key, man


def full_rating(unit: str, a=(4, 3), b=(2, 2), preference="A", comment="") -> dict:
    return {"unit": unit, "scores": {"A": dict(zip(DIMS, a, strict=False)), "B": dict(zip(DIMS, b, strict=False))}, "preference": preference,
            "comment": comment}


def write_page_file(path: Path, man: dict, rater: str, rows: list[dict], package_id: str | None = None) -> Path:
    path.write_text(json.dumps({"format": ratings.FORMAT, "package": package_id or man["package"], "rater": rater,
                                "ratings": rows}, ensure_ascii=False), encoding="utf-8")
    return path


# ------------------------------------------------------------------ export
def test_units_are_blinded_by_coin_flip_and_the_packages_never_name_a_model(exported, tmp_path):
    units, key, man = exported
    assert len(units) == 12 and set(key) == {u.id for u in units}
    for u in units:  # the key undoes the blinding: label -> the model whose answer it shows
        assert u.answers["A"] == f"{VOICE[key[u.id]['A']]}的回答 {int(key[u.id]['item'][1:])}"
        assert {key[u.id]["A"], key[u.id]["B"]} == set(key[u.id]["pair"])
    assert 0 < sum(key[u]["A"] == key[u]["pair"][0] for u in key) < 12  # both orders occur
    files = [p for p in (tmp_path / "blind").rglob("*") if p.is_file()]
    assert len(files) == 2 * 2 + 2  # per rater a page and a sheet; the labeling config; the manifest
    for path in files:  # nothing a rater receives names a model
        text = path.read_text(encoding="utf-8")
        assert not any(m in text for m in MODELS), path
    page = (tmp_path / "blind/r1/rate.html").read_text(encoding="utf-8")
    assert man["package"] in page and "参考答案" in page and "准确性" in page
    # the same inputs give the same packages (and the same package id); other answers another id
    again = package.build_units(fake_answers(), [["alpha_model", "beta_model"], ["alpha_model", "gamma_model"]], 6, 7)
    assert package.package_id(*again, DIMS) == man["package"]
    other = fake_answers()
    other["beta_model"]["q01"]["answer"] = "改过的回答"
    other_units, other_key = package.build_units(other, [["alpha_model", "beta_model"], ["alpha_model", "gamma_model"]],
                                                 6, 7)
    if any(u.item == "q01" for u in other_units[:6]):
        assert package.package_id(other_units, other_key, DIMS) != man["package"]


def test_overlap_units_go_to_every_rater_and_the_rest_to_one_each(exported):
    _, key, man = exported
    r1, r2 = set(man["raters"]["r1"]), set(man["raters"]["r2"])
    assert len(r1 & r2) == 6  # 3 shared per pair x 2 pairs
    assert r1 | r2 == set(key) and len(r1) == len(r2) == 9  # 6 shared + 3 of the 6 others each
    assert man["raters"]["r1"] != sorted(man["raters"]["r1"])  # an order of the rater's own


def test_too_few_common_answers_is_a_clear_error():
    with pytest.raises(ValueError, match="answered only 12 questions in common"):
        package.build_units(fake_answers(), [["alpha_model", "beta_model"]], 13, seed=0)


def test_an_answers_file_that_is_not_qa_names_file_and_line(tmp_path):
    path = tmp_path / "kb_ner_answers.jsonl"
    path.write_text('{"id": "x", "text": "t", "answer": "a"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"kb_ner_answers.jsonl:1: no question, reference.*QA task"):
        package.load_answers(path)


def test_label_studio_config_names_every_column_the_importer_reads(exported):
    config = package.label_studio_config(DIMS, show_reference=True)
    for column in package.csv_columns(DIMS):
        if column.startswith(("A_", "B_")) or column in ("preference", "comment"):
            assert f'name="{column}"' in config
        elif column != "unit":
            assert f'value="${column}"' in config


# ------------------------------------------------------------------ the page, in a real browser
def test_the_rating_page_filled_in_headless_chromium_saves_a_file_the_import_accepts(exported, tmp_path):
    units, key, man = exported
    assigned = man["raters"]["r1"]

    def choose(unit, answers, dims):  # A gets 5/4, B gets 2/1; A preferred, except a tie on the first unit
        assert dims == DIMS and answers == {u.id: u for u in units}[unit].answers  # the page shows the unit
        comment = "回答A更完整" if unit == assigned[1] else ""
        return {"A": {"accuracy": 5, "helpfulness": 4}, "B": {"accuracy": 2, "helpfulness": 1}}, \
            "tie" if unit == assigned[0] else "A", comment

    def check(tab):  # every unit counted complete, and what the rater clicked survives a reload
        assert tab.locator("#progress").inner_text() == f"已完成 {len(assigned)} / {len(assigned)} 题"
        tab.reload()
        assert tab.locator("#progress").inner_text() == f"已完成 {len(assigned)} / {len(assigned)} 题"
        assert tab.locator("section.unit.done").count() == len(assigned)

    (tmp_path / "returned").mkdir()
    saved = fill_rating_page(tmp_path / "blind/r1/rate.html", tmp_path / "returned", choose, check)
    assert saved.name == f"ratings_r1_{man['package']}.json"
    rated = ratings.load_ratings([saved], man)
    assert len(rated) == len(assigned) and {r.rater for r in rated} == {"r1"}
    by_unit = {r.unit: r for r in rated}
    assert by_unit[assigned[0]].preference == "tie" and by_unit[assigned[1]].comment == "回答A更完整"
    assert by_unit[assigned[2]].scores == {"A": {"accuracy": 5, "helpfulness": 4}, "B": {"accuracy": 2, "helpfulness": 1}}
    scores, preferences = ratings.unblind(rated, key)
    for row in preferences[1:]:  # "A better" means whichever model the coin put at A
        unit = row["unit"]
        assert row["outcome"] == ("a" if key[unit]["A"] == key[unit]["pair"][0] else "b")
    result = summary.summarise(scores, preferences, ["r1"], DIMS, n_boot=200, seed=0)
    assert result["ratings"] == len(assigned) and set(result["win_tie_lose"]) == {"alpha_model vs beta_model",
                                                                                  "alpha_model vs gamma_model"}


# ------------------------------------------------------------------ import checks
def test_the_import_names_file_and_row_for_every_kind_of_bad_rating(exported, tmp_path):
    _, _, man = exported
    r1 = man["raters"]["r1"]
    foreign = next(u for u in man["raters"]["r2"] if u not in r1)
    rows = [full_rating(u) for u in r1]
    rows[1]["scores"]["B"]["helpfulness"] = None  # missing
    rows[2]["scores"]["A"]["accuracy"] = 7  # out of range
    rows[3]["preference"] = "C"
    rows.append(full_rating(foreign))  # not given to r1
    rows.append(full_rating(r1[0]))  # rated twice
    path = write_page_file(tmp_path / "r1.json", man, "r1", rows)
    with pytest.raises(ratings.RatingsError) as error:
        ratings.load_ratings([path], man)
    lines = str(error.value).splitlines()
    assert f"{path}: rating 2: {r1[1]} B_helpfulness: missing rating" in lines
    assert f"{path}: rating 3: {r1[2]} A_accuracy: 7 is not a rating 1-5" in lines
    assert f"{path}: rating 4: {r1[3]} preference: 'C' is not one of A, tie, B" in lines
    assert f"{path}: rating {len(r1) + 1}: unit '{foreign}' was not given to rater 'r1' (unknown item)" in lines
    assert f"{path}: rating {len(r1) + 2}: rater 'r1' rated {r1[0]} again (first at {path}: rating 1)" in lines


def test_a_file_for_another_package_an_unknown_rater_and_unfinished_work_are_refused(exported, tmp_path):
    _, _, man = exported
    r1 = man["raters"]["r1"]
    stale = write_page_file(tmp_path / "old.json", man, "r1", [full_rating(u) for u in r1], package_id="0123456789ab")
    with pytest.raises(ratings.RatingsError, match=r"old.json: made for package '0123456789ab', the current export"):
        ratings.load_ratings([stale], man)
    stranger = write_page_file(tmp_path / "x.json", man, "r9", [full_rating(r1[0])])
    with pytest.raises(ratings.RatingsError, match=r"x.json: rating 1: rater 'r9' is not one of blind.raters"):
        ratings.load_ratings([stranger], man)
    half = write_page_file(tmp_path / "half.json", man, "r1", [full_rating(u) for u in r1[:4]])
    with pytest.raises(ratings.RatingsError, match=r"rater 'r1': 5 of 9 assigned units not rated"):
        ratings.load_ratings([half], man)
    assert len(ratings.load_ratings([half], man, allow_incomplete=True)) == 4
    garbage = tmp_path / "notes.json"
    garbage.write_text("{not json", encoding="utf-8")
    with pytest.raises(ratings.RatingsError, match="notes.json: not a JSON rating file"):
        ratings.load_ratings([garbage], man)


def test_a_filled_in_csv_sheet_is_read_and_its_rows_named_in_errors(exported, tmp_path):
    units, key, man = exported
    sheet = (tmp_path / "blind/r2/rating_sheet.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(sheet.splitlines()))
    assert [r["unit"] for r in rows] == man["raters"]["r2"] and rows[0]["question"].startswith("问题")
    for r in rows:
        r.update({"A_accuracy": "4", "A_helpfulness": "4", "B_accuracy": "3", "B_helpfulness": "3.0",
                  "preference": "B"})
    rows[4]["A_accuracy"] = ""
    path = tmp_path / "r2.csv"  # the file name is the rater id
    with path.open("w", encoding="utf-8-sig", newline="") as f:  # what Excel's "CSV UTF-8" writes
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(ratings.RatingsError, match=rf"r2.csv:6: {rows[4]['unit']} A_accuracy: missing rating"):
        ratings.load_ratings([path], man)
    rows[4]["A_accuracy"] = "4"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    rated = ratings.load_ratings([path], man)
    assert {r.rater for r in rated} == {"r2"} and all(r.scores["B"]["helpfulness"] == 3 for r in rated)


def test_the_same_rater_in_two_files_is_a_duplicate(exported, tmp_path):
    _, _, man = exported
    r1 = man["raters"]["r1"]
    a = write_page_file(tmp_path / "a.json", man, "r1", [full_rating(u) for u in r1])
    b = write_page_file(tmp_path / "b.json", man, "r1", [full_rating(r1[0])])
    with pytest.raises(ratings.RatingsError, match=rf"b.json: rating 1: rater 'r1' rated {r1[0]} again \(first at "
                                                   rf".*a.json: rating 1\)"):
        ratings.load_ratings([a, b], man)


# ------------------------------------------------------------------ agreement, by hand
def test_cohen_kappa_matches_the_hand_computation():
    # 10 items, 2 categories. Rater a: 6 yes, 4 no; rater b: 5 yes, 5 no; they agree on 7.
    a = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    b = [1, 1, 1, 1, 0, 0, 1, 0, 0, 0]
    # p_o = 7/10; p_e = 0.6*0.5 + 0.4*0.5 = 0.5; kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4
    assert agreement.cohen_kappa(a, b, [0, 1]) == pytest.approx(0.4)
    # quadratic weights on a 1-3 scale: disagreement costs (i-j)^2 / (k-1)^2 = 1/4 for neighbours, 1 for 1 vs 3.
    x, y = [1, 2, 3, 3], [1, 3, 3, 2]
    # observed cost: (0 + 1/4 + 0 + 1/4) / 4 = 1/8. Expected, from marginals x = (1/4, 1/4, 1/2), y = (1/4, 1/4, 1/2):
    # sum_ij px_i py_j w_ij = 2*(1/4*1/4*1/4) + 2*(1/4*1/2*1) + 2*(1/4*1/2*1/4) = 1/32 + 1/4 + 1/16 = 11/32
    # kappa_w = 1 - (1/8) / (11/32) = 1 - 4/11 = 7/11
    assert agreement.cohen_kappa(x, y, [1, 2, 3], "quadratic") == pytest.approx(7 / 11)
    assert agreement.cohen_kappa([1], [1], [1, 2]) is None  # nothing to compare


def test_krippendorff_alpha_reproduces_the_published_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", 4 coders x 12 units, missing values:
    # nominal alpha 0.743, interval 0.849 (the paper's worked results).
    nan = np.nan
    data = np.array([[1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
                     [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
                     [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
                     [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan]])
    assert agreement.krippendorff_alpha(data, "nominal", [1, 2, 3, 4, 5]) == pytest.approx(0.743, abs=5e-4)
    assert agreement.krippendorff_alpha(data, "interval", [1, 2, 3, 4, 5]) == pytest.approx(0.849, abs=5e-4)
    # perfect agreement is 1; one rater or no overlap is nothing to measure
    assert agreement.krippendorff_alpha(np.array([[1, 2, 3], [1, 2, 3]]), "ordinal", [1, 2, 3]) == pytest.approx(1.0)
    assert agreement.krippendorff_alpha(np.array([[1, 2, nan], [nan, nan, 3]]), "ordinal", [1, 2, 3]) is None


def test_nominal_alpha_of_two_raters_matches_the_hand_computation():
    # Two raters, 6 units, labels 0/1: a = 0 0 1 1 1 0, b = 0 1 1 1 0 0 (disagree on units 2 and 5).
    # Coincidences: 12 pairable values, n_0 = 6, n_1 = 6; observed disagreeing pairs: 2 units x 2 ordered = 4.
    # D_o = 4 / 12; D_e = 2 * 6 * 6 / (12 * 11) = 72 / 132; alpha = 1 - (4/12) / (72/132) = 1 - 11/18 = 7/18
    data = np.array([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 0, 0]], dtype=float)
    assert agreement.krippendorff_alpha(data, "nominal", [0, 1]) == pytest.approx(7 / 18)


def simulated_raters(n_units: int, flip: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Two simulated raters: r1 rates each answer its true score; r2 the same but, with
    probability ``flip``, one point off (within 1-5); preferences copy r1's with the same flips."""
    rng = np.random.default_rng(seed)
    scores, prefs = [], []
    for u in range(n_units):
        truth = {m: int(rng.integers(1, 6)) for m in ("m_a", "m_b")}
        for rater in ("r1", "r2"):
            for m, t in truth.items():
                s = t if rater == "r1" or rng.random() >= flip else (t + 1 if t < 5 else t - 1)
                scores.append({"rater": rater, "unit": f"u{u}", "item": f"q{u}", "model": m, "dimension": "accuracy",
                               "score": s})
            outcome = "a" if truth["m_a"] > truth["m_b"] else "b" if truth["m_b"] > truth["m_a"] else "tie"
            if rater == "r2" and rng.random() < flip:
                outcome = {"a": "tie", "tie": "b", "b": "a"}[outcome]
            prefs.append({"rater": rater, "unit": f"u{u}", "item": f"q{u}", "a": "m_a", "b": "m_b",
                          "outcome": outcome})
    return scores, prefs


def test_agreement_of_simulated_raters_falls_as_their_noise_grows_and_matches_kappa_by_hand():
    exact = agreement.agreement(*simulated_raters(200, 0.0, 1), ["r1", "r2"], ["accuracy"])
    assert exact["accuracy"]["alpha"] == pytest.approx(1.0) and exact["accuracy"]["kappa_mean"] == pytest.approx(1.0)
    assert exact["preference"]["kappa_mean"] == pytest.approx(1.0) and exact["accuracy"]["n_multi"] == 400
    values = [agreement.agreement(*simulated_raters(400, f, 2), ["r1", "r2"], ["accuracy"]) for f in (0.2, 0.6)]
    assert 1.0 > values[0]["accuracy"]["alpha"] > values[1]["accuracy"]["alpha"] > 0.5  # one-point slips: ordinal
    assert 1.0 > values[0]["preference"]["alpha"] > values[1]["preference"]["alpha"]
    # the preference kappa, recomputed from the confusion table by hand
    scores, prefs = simulated_raters(400, 0.2, 2)
    a = [p["outcome"] for p in prefs if p["rater"] == "r1"]
    b = [p["outcome"] for p in prefs if p["rater"] == "r2"]
    p_o = np.mean([x == y for x, y in zip(a, b, strict=False)])
    p_e = sum(a.count(c) / len(a) * b.count(c) / len(b) for c in ("a", "tie", "b"))
    assert values[0]["preference"]["kappa_mean"] == pytest.approx((p_o - p_e) / (1 - p_e))


# ------------------------------------------------------------------ summary
def test_scores_average_raters_per_question_and_win_tie_lose_counts_ratings():
    scores = [{"rater": r, "unit": "u0", "item": "q0", "model": "m", "dimension": "accuracy", "score": s}
              for r, s in (("r1", 5), ("r2", 3))]
    scores += [{"rater": "r1", "unit": "u1", "item": "q1", "model": "m", "dimension": "accuracy", "score": 1}]
    out = summary.model_scores(scores, ["accuracy"], n_boot=0, seed=0)
    assert out["m"]["accuracy"]["mean"] == pytest.approx((4 + 1) / 2) and out["m"]["accuracy"]["n"] == 2
    assert out["m"]["accuracy"]["ratings"] == 3
    prefs = [{"rater": r, "unit": u, "item": u, "a": "x", "b": "y", "outcome": o}
             for r, u, o in (("r1", "u0", "a"), ("r2", "u0", "tie"), ("r1", "u1", "a"), ("r1", "u2", "b"))]
    wtl = summary.win_tie_lose(prefs, n_boot=500, seed=0)["x vs y"]
    assert (wtl["win"], wtl["tie"], wtl["lose"], wtl["net"]) == (0.5, 0.25, 0.25, 0.25)
    assert wtl["n_units"] == 3 and wtl["ratings"] == 4 and wtl["win_ci"][0] <= 0.5 <= wtl["win_ci"][1]
    table = summary.markdown({"scores": out, "win_tie_lose": {"x vs y": wtl},
                              "agreement": agreement.agreement(scores, prefs, ["r1", "r2"], ["accuracy"])},
                             ["accuracy"])
    assert "| x vs y | 0.50 [" in table and "| m | 2.50 |" in table


class ScriptedJudge:
    """Grades answers that contain "好" 5/5 and others 2/2; in pairwise prompts prefers the
    answer with "好" (whichever position it is in), else a tie."""

    name, model, batch_size = "scripted", "judge-1", 8

    def generate(self, requests):
        out = []
        for r in requests:
            text = r.messages[-1]["content"]
            if "模型回答：" in text:
                good = "好" in text.split("模型回答：")[1]
                s = 5 if good else 2
                out.append(Completion(text=json.dumps({"proactivity": s, "accuracy": s, "helpfulness": s,
                                                       "linguistic_quality": s})))
            else:
                first, second = text.split("回答1：")[1].split("回答2：")
                verdict = "1" if "好" in first and "好" not in second else "2" if "好" in second and "好" not in first \
                    else "平局"
                out.append(Completion(text=f"更好：{verdict}"))
        return out


def test_the_judge_rates_the_units_as_one_more_rater(tmp_path):
    answers = fake_answers(8)
    for i in range(8):  # alpha_model's answers are the good ones
        answers["alpha_model"][f"q{i:02d}"]["answer"] = f"很好的回答 {i}"
    units, key = package.build_units(answers, [["alpha_model", "beta_model"]], 8, seed=3)
    scores, prefs, counts = judge_units(units, key, DIMS, ScriptedJudge(), CallCache(tmp_path / "calls.sqlite"),
                                        Decoding(max_new_tokens=64), 2, 0.1)
    assert counts["answers_unparseable"] == 0 and counts["units_unparseable"] == 0
    assert {(r["model"], r["score"]) for r in scores} == {("alpha_model", 5), ("beta_model", 2)}
    assert [p["outcome"] for p in prefs] == ["a"] * 8 and {p["rater"] for p in prefs} == {summary.JUDGE}
    # humans who agree with the judge: alpha unchanged at 1; kappa judge~human 1
    human_scores = [{**r, "rater": "r1"} for r in scores] + [{**r, "rater": "r2"} for r in scores]
    human_prefs = [{**p, "rater": "r1"} for p in prefs] + [{**p, "rater": "r2"} for p in prefs]
    out = summary.judge_agreement(human_scores, human_prefs, scores, prefs, ["r1", "r2"], DIMS)
    assert out["accuracy"]["alpha_humans"] == pytest.approx(1.0)
    assert out["accuracy"]["alpha_with_judge"] == pytest.approx(1.0)
    assert out["accuracy"]["kappa_judge_mean"] == pytest.approx(1.0)


def test_saving_an_unfinished_page_asks_first_and_says_how_many_are_left(exported, tmp_path):
    from playwright.sync_api import sync_playwright

    from medlab.report.browser import FLAGS, find_browser

    _, _, man = exported
    first = man["raters"]["r1"][0]
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(find_browser()), args=FLAGS)
        try:
            tab = chromium.new_context(accept_downloads=True).new_page()
            tab.goto((tmp_path / "blind/r1/rate.html").as_uri())
            for label in ("A", "B"):
                for d in DIMS:
                    tab.check(f'input[name="{first}/{label}/{d}"][value="3"]')
            tab.check(f'input[name="{first}/preference"][value="tie"]')
            messages = []
            tab.once("dialog", lambda dialog: (messages.append(dialog.message), dialog.dismiss()))
            tab.click("#save")  # dismissed: nothing is saved
            assert messages == [f"还有 {len(man['raters']['r1']) - 1} 题没有评完（未完成的题会被导入程序拒收）。仍要保存吗？"]
            tab.once("dialog", lambda dialog: dialog.accept())
            with tab.expect_download() as download:
                tab.click("#save")
            saved = tmp_path / download.value.suggested_filename
            download.value.save_as(saved)
        finally:
            chromium.close()
    with pytest.raises(ratings.RatingsError, match=r"rating 2: .* missing rating"):
        ratings.load_ratings([saved], man)  # the unrated units come back empty and are named
