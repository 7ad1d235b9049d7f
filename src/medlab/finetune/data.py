"""Named training sets for fine-tuning, assembled from the filter stage's files.

A dataset in ``finetune.datasets`` is a list of *parts*; each part reads JSONL files and
keeps the records that match its selectors (generation ``methods``, ``domains``, and, in
the embedded world, the simulator's ground-truth ``faults``). ``take: chosen`` turns the
filter's preference pairs into SFT samples (prompt + chosen answer). A ``faults`` selector
on a file without any ground truth is an error, not a silent empty set (records without
it, such as loaded general chats, simply match no fault).

A part with ``format`` other than ``medlab`` reads a public SFT set as it is (DISC-Med-SFT,
HuatuoGPT-II, ShareGPT, alpaca, MOSS: ``medlab.formats.instructions``), every chat a
sample of the part's ``domain`` with no ground truth (method ``external``, source = the
file's stem) -- the way a researcher fine-tunes on DISC-Med-SFT + HuatuoGPT-II first.
"""

from __future__ import annotations

from pathlib import Path

from medlab.records import PreferencePair, RecordError, Sample, iter_jsonl


def _matches(sample: Sample, part, where: str) -> bool:
    method = sample.provenance.get("method")
    if part.methods is not None and method not in part.methods:
        return False
    if part.exclude_methods is not None and method in part.exclude_methods:
        return False
    if part.domains is not None and sample.domain not in part.domains:
        return False
    if part.faults is not None:  # a record nobody labelled (a loaded file) matches no fault
        return sample.truth is not None and sample.truth.get("fault") in part.faults
    return True


def _has_truth(sample: Sample) -> bool:
    return sample.truth is not None and "fault" in sample.truth


def load_samples(parts, root: Path, dataset: str) -> list[Sample]:
    """SFT samples of one named dataset (``finetune.datasets.<dataset>``), in file order,
    each sample once even if two parts select it."""
    out: dict[str, Sample] = {}
    for k, part in enumerate(parts):
        where = f"finetune.datasets.{dataset}[{k}]"
        for name in part.files:
            path = root / name
            if part.format != "medlab":
                for sample in external_samples(path, part.format, part.domain, part.encoding, name):
                    out.setdefault(sample.id, sample)
            elif part.take == "chosen":
                for pair in iter_jsonl(path, PreferencePair):
                    sample_id = pair.provenance.get("chosen_id", pair.id)
                    sample = Sample(id=sample_id, source=pair.source,
                                    domain=pair.provenance.get("domain", "general_medicine"),
                                    messages=[*pair.prompt, {"role": "assistant", "content": pair.chosen}],
                                    provenance={"method": "preference_chosen", "pair": pair.id},
                                    truth={"fault": pair.truth["chosen_fault"]} if pair.truth else None)
                    if _matches(sample, part, f"{where} {path}"):
                        out.setdefault(sample.id, sample)
            else:
                labelled = 0
                for sample in iter_jsonl(path, Sample):
                    labelled += _has_truth(sample)
                    if _matches(sample, part, f"{where} {path}"):
                        out.setdefault(sample.id, sample)
                if part.faults is not None and not labelled:
                    raise RecordError(f"{where}: {path} has no record with ground truth, but the part selects "
                                      f"faults {part.faults} (ground truth exists only for simulated data)")
    if not out:
        raise RecordError(f"finetune.datasets.{dataset}: no sample matches (files "
                          f"{[f for p in parts for f in p.files]}); check its selectors")
    return list(out.values())


def external_samples(path: Path, fmt: str, domain: str, encoding: str, name: str) -> list[Sample]:
    """A public SFT file's chats as samples (ids ``<stem>-<its own id>``, no ground truth)."""
    from medlab.formats.instructions import load_instructions

    return [Sample(id=f"{path.stem}-{ident}", source=path.stem, domain=domain, messages=messages, truth=None,
                   provenance={"method": "external", "format": fmt, "source_id": f"{name}#{ident}",
                               "where": where.rsplit("/", 1)[-1]})
            for ident, where, messages in load_instructions(path, fmt, encoding)]


def load_pairs(parts, root: Path, dataset: str) -> list[PreferencePair]:
    """Preference pairs of one named dataset, for a DPO stage."""
    out: list[PreferencePair] = []
    for part in parts:
        for name in part.files:
            out += list(iter_jsonl(root / name, PreferencePair))
    if not out:
        raise RecordError(f"finetune.datasets.{dataset}: no preference pair in {[f for p in parts for f in p.files]}")
    return out


def data_files(params, recipe: str) -> list[Path]:
    """Every file a recipe reads (for its run fingerprint)."""
    names = {n for stage in params.recipes[recipe] for n in stage.data}
    return sorted({Path(f) for n in names for part in params.datasets[n] for f in part.files})
