"""Task implementations, registered by `Task`. Every task module is imported here, explicitly: add a line
for a new task (registered names only, never import by string)."""

# Imported for their @register_task side effect.
from . import classification, embedding, generation, reranking  # noqa: F401
from .base import DistillTask, Row, TaskModel, register_task, task_class

__all__ = ["DistillTask", "Row", "TaskModel", "register_task", "task_class"]
