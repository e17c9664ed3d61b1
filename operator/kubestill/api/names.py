"""Deterministic names and labels of the objects kubestill creates: the contract between the operator, the
trainer (its report ConfigMap) and the local node. Deterministic names make every create idempotent."""

from __future__ import annotations

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "kubestill"
DJ_LABEL = "kubestill.io/distillationjob"
STAGE_LABEL = "kubestill.io/stage"
SM_LABEL = "kubestill.io/studentmodel"
REPORT_LABEL = "kubestill.io/report"

# Where a Pod sees claim <claim> of a pvc://<claim>/<path> URI.
PVC_ROOT = "/mnt/kubestill/pvc"
# Where a stage Job sees its config: the pod annotation CONFIG_ANNOTATION, projected by the downward API as
# CONFIG_DIR/CONFIG_KEY. Each Job carries the exact config it ran with, and a job costs no ConfigMap write.
CONFIG_DIR = "/etc/kubestill"
CONFIG_KEY = "config.yaml"
CONFIG_ANNOTATION = "kubestill.io/config"


def job_name(dj_name: str, stage: str) -> str:
    """Stage Job `<dj-name>-<stage>`."""
    return f"{dj_name}-{stage}"


def report_map_name(dj_name: str) -> str:
    """`<dj>-report`: created by the trainer on its first report (progress.json, metrics.json), with the
    metadata the operator hands it (labels, owner), so nothing is written for it before a stage runs."""
    return f"{dj_name}-report"


def triton_name(sm_name: str) -> str:
    """ConfigMap, Deployment and Service of a StudentModel: `<name>-triton`."""
    return f"{sm_name}-triton"


def check_job_name(owner: str, key: str, attempt: int) -> str:
    """Storage check Job `<owner>-check-<key>-<attempt>` of a DistillationJob or StudentModel (key: a digest of
    what it checks)."""
    return f"{owner}-check-{key}-{attempt}"
