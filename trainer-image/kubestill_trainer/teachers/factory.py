"""Build the teacher the spec names."""

from __future__ import annotations

from collections.abc import Sequence

from kubestill.api.v1alpha1.distillationjob import DistillationJobSpec

from ..storage import resolve_uri
from ..tasks.base import DistillTask
from ..tasks.teacher import Teacher
from .local import LocalTeacher


def make_teacher(spec: DistillationJobSpec, task: DistillTask, labels: Sequence[str] = (),
                 device: str = "cpu") -> Teacher:
    """`labels`: candidate classes from the data (an OpenAI teacher answers with one of them)."""
    t = spec.teacher
    if t.model_uri is not None:
        path = resolve_uri(t.model_uri)
        if not path.exists():
            raise FileNotFoundError(f"spec.teacher.modelUri: {t.model_uri} -> {path} does not exist")
        return LocalTeacher(path, task.load_model(path), spec.training.max_seq_length, device)
    if t.triton is not None:
        from .triton import TritonTeacher

        return TritonTeacher(t.triton)
    assert t.openai is not None
    from .openai import OpenAITeacher

    return OpenAITeacher(t.openai, labels)
