"""The report channel: progress and metrics copied into a ConfigMap the operator watches, so it never has
to read the artifact store. Active only when KUBESTILL_REPORT_CONFIGMAP and KUBESTILL_NAMESPACE are set.

The first report creates the ConfigMap with the metadata the operator put in KUBESTILL_REPORT_METADATA (its
labels, which the operator watches, and the DistillationJob as owner, so it is deleted with the job); later
reports merge one key each. The stage's service account needs get, create and patch on configmaps.
Failures to report are logged, never fatal: the files in the workdir remain the source of truth."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from kubestill.api.names import MANAGED_BY, MANAGER, NAMESPACE_ENV, REPORT_CONFIGMAP_ENV, REPORT_METADATA_ENV

log = logging.getLogger(__name__)


class ReportForbidden(RuntimeError):
    """The API server refused this Pod's identity the report ConfigMap (401/403): permanent, so the stage stops
    at its first report instead of running to the end for a result the operator can never read."""


class ReportChannel:
    def __init__(self, name: str | None, namespace: str | None, metadata: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.namespace = namespace
        self.metadata = dict(metadata or {})
        self._api: Any = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReportChannel:
        env = os.environ if env is None else env
        try:
            metadata = json.loads(env.get(REPORT_METADATA_ENV) or "{}")
        except ValueError:
            log.warning("%s is not JSON; the report ConfigMap gets default labels", REPORT_METADATA_ENV)
            metadata = {}
        return cls(env.get(REPORT_CONFIGMAP_ENV) or None, env.get(NAMESPACE_ENV) or None,
                   metadata if isinstance(metadata, dict) else {})

    @property
    def enabled(self) -> bool:
        return bool(self.name and self.namespace)

    def _core(self) -> Any:
        if self._api is None:
            from kubernetes import client, config  # only imported when reporting is on

            try:
                config.load_incluster_config()
            except config.ConfigException:
                # Read $KUBECONFIG now: the client library fixes its default path when it is first imported.
                config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
            self._api = client.CoreV1Api()
        return self._api

    def _new_config_map(self, key: str, text: str) -> dict[str, Any]:
        labels = {MANAGED_BY: MANAGER, **(self.metadata.get("labels") or {})}
        metadata = {**self.metadata, "name": self.name, "namespace": self.namespace, "labels": labels}
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {key: text}}

    def publish(self, key: str, text: str) -> bool:
        """Merge `key: text` into the ConfigMap (create it when missing). True when it was written; False (and a
        warning) on a transient failure. Raises ReportForbidden when the API server refuses this identity."""
        if not self.enabled:
            return False
        try:
            from kubernetes.client.exceptions import ApiException

            api = self._core()
            body = {"data": {key: text}}
            try:
                try:
                    api.patch_namespaced_config_map(self.name, self.namespace, body)
                except ApiException as e:
                    if e.status != 404:
                        raise
                    try:
                        api.create_namespaced_config_map(self.namespace, self._new_config_map(key, text))
                    except ApiException as e2:
                        if e2.status != 409:  # created meanwhile (another process of this stage): merge into it
                            raise
                        api.patch_namespaced_config_map(self.name, self.namespace, body)
            except ApiException as e:
                if e.status in (401, 403):
                    raise ReportForbidden(self._forbidden(e)) from None
                raise
            return True
        except ReportForbidden:
            raise
        except Exception as e:
            log.warning("could not report %s to ConfigMap %s/%s: %s", key, self.namespace, self.name, e)
            return False

    def _forbidden(self, err: Any) -> str:
        reason = f"{err.status} {err.reason}".strip()
        return (f"cannot write the report ConfigMap {self.namespace}/{self.name} ({reason}): the stage Pod's "
                f"ServiceAccount needs get, create and patch on configmaps in namespace {self.namespace}; list the "
                "namespace under the chart's trainer.namespaces, or bind the chart's <release>-trainer ClusterRole "
                "to the account in spec.run.serviceAccountName")
