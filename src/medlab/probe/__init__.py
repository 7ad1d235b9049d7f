"""Attitude-scale bias probing (``probe@<model>`` stages).

    scale.py    scales as declarative YAML files (scales/): items, Likert options, reverse keying,
                subscales, counterfactual patient-group templates; loader with file/item errors
    score.py    letter probabilities under every option order, debiased and calibrated scores,
                position-bias index, group gaps with paired tests
    validity.py the planted-bias validity check, on one pair of models or over their seeds, and its record
"""
