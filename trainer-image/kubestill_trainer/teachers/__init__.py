"""Teachers for the label stage: a local model directory, a Triton endpoint, an OpenAI-compatible API.
The interface they implement is `kubestill_trainer.tasks.teacher` (re-exported here)."""

from ..tasks.teacher import ClassScores, Generated, Teacher, TeacherError, TeacherUnsupported

__all__ = ["ClassScores", "Generated", "Teacher", "TeacherError", "TeacherUnsupported"]
