"""What finished Jobs' Pods said, read once per Job: a finished Job never changes, so its Pods are listed once and
the answer kept, for the check Jobs whose result is their Pod's termination message (storage and serving checks)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from kubestill.clients.kube import KubeClient


class FinishedJobMessages:
    """`read(pods)` of each finished Job's Pods, by (namespace, Job name). At most `capacity` answers are kept,
    the least recently used first out: one forgotten costs one Pod list, and Jobs of deleted owners leave no
    trace in a long-running operator."""

    def __init__(self, read: Callable[[Sequence[dict[str, Any]]], str], capacity: int = 4096) -> None:
        self.read = read
        self.capacity = capacity
        self._kept: OrderedDict[tuple[str, str], str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    async def get(self, api: KubeClient, namespace: str, job: str) -> str:
        """The Job's answer; "" while its Pods are not listed yet (or were garbage-collected): asked again then."""
        key = (namespace, job)
        if key not in self._kept:
            pods = await api.list("v1", "Pod", namespace, f"batch.kubernetes.io/job-name={job}")
            if not pods:
                return ""
            self._kept[key] = self.read(pods)
            while len(self._kept) > self.capacity:
                self._kept.popitem(last=False)
        self._kept.move_to_end(key)
        return self._kept[key]
