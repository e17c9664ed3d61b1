"""Teachers for the label stage: a local model directory, a Triton endpoint, an OpenAI-compatible API."""

from .base import ClassScores, Generated, Teacher, TeacherError, TeacherUnsupported

__all__ = ["ClassScores", "Generated", "Teacher", "TeacherError", "TeacherUnsupported"]
