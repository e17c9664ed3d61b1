"""kubestill.io/v1alpha1: DistillationJob, StudentModel and CanaryRollout."""

from . import canaryrollout, distillationjob, studentmodel
from ._base import (
    API_VERSION,
    CATEGORY,
    GROUP,
    VERSION,
    Condition,
    ConditionStatus,
    KubeModel,
    Rule,
    format_duration,
    parse_duration,
)
from .canaryrollout import CanaryRollout, CanaryRolloutSpec, CanaryRolloutStatus, RolloutPhase
from .common import ServingSpec, Task
from .distillationjob import (
    STAGES,
    DistillationJob,
    DistillationJobSpec,
    DistillationJobStatus,
    LossName,
    Phase,
    Stage,
)
from .studentmodel import StudentModel, StudentModelPhase, StudentModelSpec, StudentModelStatus

# Each kind's module, in the order CRDs are listed.
KIND_MODULES = (distillationjob, studentmodel, canaryrollout)

__all__ = [
    "API_VERSION",
    "CATEGORY",
    "GROUP",
    "KIND_MODULES",
    "STAGES",
    "VERSION",
    "CanaryRollout",
    "CanaryRolloutSpec",
    "CanaryRolloutStatus",
    "Condition",
    "ConditionStatus",
    "DistillationJob",
    "DistillationJobSpec",
    "DistillationJobStatus",
    "KubeModel",
    "LossName",
    "Phase",
    "RolloutPhase",
    "Rule",
    "ServingSpec",
    "Stage",
    "StudentModel",
    "StudentModelPhase",
    "StudentModelSpec",
    "StudentModelStatus",
    "Task",
    "format_duration",
    "parse_duration",
]
