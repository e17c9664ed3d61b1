"""Everything a stage needs, built once from the command line: the spec, the workdir, the task, the report
channel. Stages are plain functions of a `RunContext`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kubestill.api.v1alpha1 import DistillationJobSpec

from .report import ReportChannel
from .storage import Storage, open_workdir
from .tasks import task_class
from .tasks.base import DistillTask


def pick_device() -> str:
    """cuda when a GPU is visible (the trainer image on a GPU node), else the CPU; KUBESTILL_DEVICE forces."""
    forced = os.environ.get("KUBESTILL_DEVICE")
    if forced:
        return forced
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class RunContext:
    spec: DistillationJobSpec
    metadata: dict[str, Any]
    workdir: Storage
    task: DistillTask
    report: ReportChannel
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, spec: DistillationJobSpec, metadata: dict[str, Any], workdir_uri: str) -> RunContext:
        return cls(spec=spec, metadata=metadata, workdir=open_workdir(workdir_uri),
                   task=task_class(spec.task)(spec), report=ReportChannel.from_env(), device=pick_device())

    def path(self, *parts: str) -> Path:
        return self.workdir.path(*parts)
