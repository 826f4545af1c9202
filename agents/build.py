"""The chat backends a run config describes, each built once: the student and the teacher.

``backend_for(ModelSection)`` builds one backend (agents/backends.py), a local one wrapped in
``CoalescingBackend`` so parallel chains share batched calls; ``Backends`` holds a run's
student and teacher, built lazily and checked at once (a dead endpoint is one clear error
now, not ten minutes later), the teacher sharing the student's instance when both name the
same local model. Used by ``teachloop run`` (probes, evaluation, online rounds) and
``teachloop generate``; nothing here imports torch until a local backend is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from teachloop.agents.config import ModelSection, TeacherLoopConfig


def backend_for(m: ModelSection, window_s: float = 0.05, role: str = "") -> Any:
    """The chat backend ``m`` describes; local ones coalesce concurrent calls for ``window_s``.
    ``role`` (student, teacher) names an endpoint pool in its messages and statistics."""
    from teachloop.agents.backends import LocalBackendConfig, OpenAIBackendConfig, make_backend
    from teachloop.agents.batching import CoalescingBackend

    if m.backend == "local":
        model = None if m.model == "embedded" else m.model
        cfg = LocalBackendConfig(model=model)
        if m.dtype != "auto":
            cfg.dtype = m.dtype
        return CoalescingBackend(make_backend(cfg), window_s=window_s)
    tok = m.tokenizer
    if tok == "embedded":
        from teachloop.agents.embedded import embedded_model_path

        tok = str(embedded_model_path())
    return make_backend(OpenAIBackendConfig(base_url=m.base_url or None, role=role,
                                            cooldown_s=m.cooldown_s,
                                            model=None if m.model == "embedded" else m.model,
                                            tokenizer=tok or None, reasoning=m.reasoning,
                                            extra_body=dict(m.extra_body),
                                            max_concurrency=m.max_concurrency,
                                            timeout_s=m.timeout_s, max_retries=m.max_retries))


def same_local_model(a: ModelSection, b: ModelSection) -> bool:
    return a.backend == b.backend == "local" and (a.model, a.base_url) == (b.model, b.base_url)


def needs_llm_teacher(loop: TeacherLoopConfig, families: list[str]) -> bool:
    """Whether any of ``families`` gets the llm teacher (so a teacher backend is needed)."""
    from teachloop.agents.teacher import teacher_kind_for
    from teachloop.evals.families import get_family

    return any(teacher_kind_for(f, loop.kind, get_family(f).supports_variants) == "llm"
               for f in families)


def backend_label(backend: Any) -> str:
    """``<backend>:<model>`` for provenance (after ``check()``, which loads/resolves the model)."""
    inner = getattr(backend, "inner", backend)
    model = getattr(inner, "model_path", None) or getattr(inner, "model", None)
    return f"{inner.name}:{Path(str(model)).name}" if model is not None else inner.name


def endpoint_summary(*backends: Any) -> list[str]:
    """The per-endpoint lines of the OpenAI-compatible backends among ``backends`` (each once)."""
    lines: list[str] = []
    for b in {id(x): x for x in backends if x is not None}.values():
        lines += getattr(getattr(b, "inner", b), "endpoint_summary", lambda: [])()
    return lines


class Backends:
    """A run's models, each loaded once: the student (probes, evaluation) and the teacher.

    ``cfg`` is a run tree (teachloop/config.py): ``cfg.student``, ``cfg.teacher.model`` and
    ``cfg.teacher.batch_window_s`` are read.
    """

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self._student: Any = None
        self._teacher: Any = None

    def _build(self, m: ModelSection, role: str) -> Any:
        b = backend_for(m, window_s=self.cfg.teacher.batch_window_s, role=role)
        b.check()
        return b

    def student(self) -> Any:
        if self._student is None:
            self._student = self._build(self.cfg.student, "student")
        return self._student

    def teacher(self) -> Any:
        """The teacher backend: the student's when both name the same local model."""
        if self._teacher is None:
            tm = self.cfg.teacher.model
            self._teacher = (self.student() if same_local_model(tm, self.cfg.student)
                             else self._build(tm, "teacher"))
        return self._teacher

    def frozen_teacher(self) -> Any:
        """A teacher for online rounds: never the model being trained (a separate instance)."""
        return self.teacher()

    def endpoint_summary(self) -> list[str]:
        """One line per endpoint of the roles built so far (requests, failures, in flight...)."""
        return endpoint_summary(self._student, self._teacher)

    def close(self) -> None:
        for b in {id(x): x for x in (self._student, self._teacher) if x is not None}.values():
            b.close()
        self._student = self._teacher = None
