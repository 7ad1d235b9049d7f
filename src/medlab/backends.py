"""The teacher or judge a params section asks for: the embedded simulated teacher, a local
``hf`` model or an ``openai``-compatible endpoint, behind one interface (medlab.llm.base)."""

from __future__ import annotations

from pathlib import Path

from medlab.llm.base import Backend, LLMError


def make_backend(cfg, root: Path, kb=None, seed: int = 0, runtime=None, key: str = "generate.teacher") -> Backend:
    """The backend ``generate.teacher`` (or any section of the same shape, at params ``key``)
    asks for; an ``hf`` model is loaded through ``runtime`` (params ``runtime``: device, dtype).
    Errors and failure counts name ``key`` so a judge's problem is not reported as the teacher's."""
    if cfg.backend == "simulated":
        from medlab.embedded.teacher import SimulatedTeacher

        if kb is None:
            raise LLMError("the simulated teacher needs the knowledge base")
        return SimulatedTeacher(kb, cfg.simulated.faults.model_dump(), cfg.simulated.stigma_group, seed)
    if cfg.backend == "hf":
        from medlab.llm.hf import HFBackend

        name = cfg.hf.name_or_path
        local = root / name
        backend = HFBackend(str(local) if local.exists() else name, cfg.hf.batch_size, cfg.hf.revision,
                            cfg.hf.trust_remote_code, runtime=runtime)
        backend.max_failed_fraction = cfg.hf.max_failed_fraction
        backend.params_key = f"{key}.hf"
        return backend
    if cfg.backend == "openai":
        from medlab.llm.openai_compat import OpenAIBackend

        o = cfg.openai
        return OpenAIBackend(o.base_url, o.model, o.api_key_env, o.max_concurrency, o.timeout_s, o.max_retries,
                             revision=o.revision, seed=o.seed, max_failed_fraction=o.max_failed_fraction,
                             params_key=f"{key}.openai")
    raise LLMError(f"unknown backend {cfg.backend!r} ({key}.backend)")


def make_patient(cfg, root: Path, runtime=None) -> Backend:
    """The patient ``evaluate.consult.patient`` asks for: the embedded simulated patient
    (rule-based, answers from the case's facts), a local ``hf`` model or an endpoint."""
    if cfg.backend == "simulated":
        from medlab.embedded.patient import SimulatedPatient

        return SimulatedPatient()
    return make_backend(cfg, root, runtime=runtime, key="evaluate.consult.patient")
