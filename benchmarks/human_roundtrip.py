"""The human-evaluation round trip on the default run's models, with scripted raters.

    make repro && python benchmarks/human_roundtrip.py [--noise 0.3]

Takes the packages the ``blind`` stage exported (reports/blind/<rater>/rate.html), has a
scripted rater per package fill in the page in headless Chromium (tests/helpers/raters.py)
and save its file into a temporary folder -- never ratings/: these are not human ratings
-- then imports, unblinds and summarises them as the ``unblind`` stage does. The scripted
raters score an answer by its ROUGE-L (characters) against the reference, mapped to 1-5,
and each moves a score one point with probability ``--noise`` (their own random draws), so
their agreement is known to be high but not perfect. Prints the summary; writes
benchmarks/results/human_roundtrip.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import numpy as np  # noqa: E402
from helpers.raters import fill_rating_page  # noqa: E402

from medlab.evaluate.text_metrics import rouge_l  # noqa: E402
from medlab.formats.text import iter_json_lines  # noqa: E402
from medlab.human import ratings, summary  # noqa: E402
from medlab.paths import data_dir, reports_dir  # noqa: E402
from medlab.records import write_json  # noqa: E402


def scripted_rater(units: dict[str, dict], noise: float, seed: int):
    rng = np.random.default_rng(seed)

    def choose(unit, answers, dims):
        reference = units[unit]["reference"]
        scores = {}
        for label, text in answers.items():
            base = 1 + min(4, int(rouge_l(text, reference, "char") * 8))  # ROUGE-L 0.5 and above: 5
            scores[label] = {d: int(np.clip(base + (rng.choice([-1, 1]) if rng.random() < noise else 0), 1, 5))
                             for d in dims}
        mean = {label: np.mean(list(s.values())) for label, s in scores.items()}
        preference = "tie" if abs(mean["A"] - mean["B"]) < 0.5 else max(mean, key=mean.get)
        return scores, preference, ""
    return choose


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, default=0.3)
    args = parser.parse_args()
    manifest = json.loads(reports_dir("blind", "manifest.json").read_text())
    key = json.loads(data_dir("blind", "key.json").read_text())
    units = {row["id"]: row for _, row in iter_json_lines(data_dir("blind", "units.jsonl"))}
    with tempfile.TemporaryDirectory() as folder:
        files = [fill_rating_page(reports_dir("blind", rater, "rate.html"), Path(folder),
                                  scripted_rater(units, args.noise, seed=k))
                 for k, rater in enumerate(manifest["raters"])]
        rated = ratings.load_ratings(files, manifest)
    scores, preferences = ratings.unblind(rated, key)
    result = summary.summarise(scores, preferences, list(manifest["raters"]), manifest["dimensions"], 1000, 0)
    print(summary.markdown(result, manifest["dimensions"]))
    write_json(Path(__file__).parent / "results" / "human_roundtrip.json",
               {"package": manifest["package"], "noise": args.noise, "raters": "scripted (ROUGE-L to 1-5 + noise)",
                "summary": result})


if __name__ == "__main__":
    main()
