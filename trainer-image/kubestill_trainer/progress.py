"""progress.json: step, %, ETA and loss of the train stage, rewritten every few seconds (and at the end),
in the camelCase shape of the API's `Progress` model, and mirrored to the report channel."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kubestill.api.v1alpha1.distillationjob import Progress

from .report import ReportChannel
from .storage import write_text_atomic


def progress_at(
    step: int, total_steps: int, steps_per_epoch: int, loss: float | None, started: datetime,
    start_step: int, now: datetime,
) -> Progress:
    """Progress after `step` of `total_steps`; the ETA extrapolates the rate since this process started
    (at `start_step`, so a resumed run does not count the steps it skipped as instantaneous)."""
    done = step - start_step
    eta = None
    if done > 0 and total_steps > step:
        per_step = (now - started).total_seconds() / done
        eta = now + timedelta(seconds=per_step * (total_steps - step))
    elif total_steps and step >= total_steps:
        eta = now
    return Progress(
        percent=round(100.0 * step / total_steps, 2) if total_steps else 0.0,
        step=step,
        total_steps=total_steps,
        epoch=round(step / steps_per_epoch, 3) if steps_per_epoch else 0.0,
        loss=loss,
        eta=eta,
        updated_at=now,
    )


class ProgressWriter:
    def __init__(self, path: Path, report: ReportChannel, every_seconds: float = 5.0) -> None:
        self.path = path
        self.report = report
        self.every = every_seconds
        self._last: datetime | None = None

    def maybe_write(self, progress: Progress, force: bool = False) -> None:
        now = progress.updated_at or datetime.now(UTC)
        if not force and self._last and (now - self._last).total_seconds() < self.every:
            return
        self._last = now
        text = json.dumps(progress.to_wire())
        write_text_atomic(self.path, text + "\n")
        self.report.publish("progress.json", text)
