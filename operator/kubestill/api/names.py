"""Deterministic names and labels of the objects kubestill creates: the contract between the operator, the
trainer (its report channel is the job's ConfigMap) and the local node. Deterministic names make every create
idempotent."""

from __future__ import annotations

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "kubestill"
DJ_LABEL = "kubestill.io/distillationjob"
STAGE_LABEL = "kubestill.io/stage"
SM_LABEL = "kubestill.io/studentmodel"
REPORT_LABEL = "kubestill.io/report"

# Where a Pod sees claim <claim> of a pvc://<claim>/<path> URI.
PVC_ROOT = "/mnt/kubestill/pvc"
# Where a stage Job sees its config (ConfigMap <dj>-config, key config.yaml).
CONFIG_DIR = "/etc/kubestill"
CONFIG_KEY = "config.yaml"


def job_name(dj_name: str, stage: str) -> str:
    """Stage Job `<dj-name>-<stage>`."""
    return f"{dj_name}-{stage}"


def config_map_name(dj_name: str) -> str:
    """`<dj>-config`: config.yaml for every stage, and the trainer's report channel (progress.json,
    metrics.json), one object so a job costs one ConfigMap write and one watched object."""
    return f"{dj_name}-config"


def triton_name(sm_name: str) -> str:
    """ConfigMap, Deployment and Service of a StudentModel: `<name>-triton`."""
    return f"{sm_name}-triton"
