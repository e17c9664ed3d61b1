"""The report channel: progress and metrics copied into a ConfigMap the operator watches, so it never has
to read the artifact store. Active only when KUBESTILL_REPORT_CONFIGMAP and KUBESTILL_NAMESPACE are set.
Failures to report are logged, never fatal: the files in the workdir remain the source of truth."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


class ReportChannel:
    def __init__(self, name: str | None, namespace: str | None) -> None:
        self.name = name
        self.namespace = namespace
        self._api: Any = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReportChannel:
        env = os.environ if env is None else env
        return cls(env.get("KUBESTILL_REPORT_CONFIGMAP") or None, env.get("KUBESTILL_NAMESPACE") or None)

    @property
    def enabled(self) -> bool:
        return bool(self.name and self.namespace)

    def _core(self) -> Any:
        if self._api is None:
            from kubernetes import client, config  # only imported when reporting is on

            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                # Read $KUBECONFIG now: the client library fixes its default path when it is first imported.
                config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
            self._api = client.CoreV1Api()
        return self._api

    def publish(self, key: str, text: str) -> bool:
        """Merge `key: text` into the ConfigMap (create it when missing). True when it was written."""
        if not self.enabled:
            return False
        try:
            from kubernetes.client.exceptions import ApiException

            api = self._core()
            body = {"data": {key: text}}
            try:
                api.patch_namespaced_config_map(self.name, self.namespace, body)
            except ApiException as e:
                if e.status != 404:
                    raise
                api.create_namespaced_config_map(
                    self.namespace,
                    {"metadata": {"name": self.name, "labels": {"app.kubernetes.io/managed-by": "kubestill"}},
                     "data": {key: text}},
                )
            return True
        except Exception as e:
            log.warning("could not report %s to ConfigMap %s/%s: %s", key, self.namespace, self.name, e)
            return False
