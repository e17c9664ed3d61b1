"""Deterministic names and labels of the objects kubestill creates: the contract between the operator, the
trainer (its report ConfigMap) and the local node. Deterministic names make every create idempotent."""

from __future__ import annotations

import hashlib

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "kubestill"
DJ_LABEL = "kubestill.io/distillationjob"
STAGE_LABEL = "kubestill.io/stage"
SM_LABEL = "kubestill.io/studentmodel"
REPORT_LABEL = "kubestill.io/report"

# A CanaryRollout holds this finalizer from before kubestill first changes its HTTPRoute until the route is in
# its final state (or restored, on delete) and kubestill's field ownership is given back.
ROUTE_RESTORE_FINALIZER = "kubestill.io/route-restore"
# On a CanaryRollout: the RouteRecord (kubestill.api.route_record) of the route as it was before kubestill
# changed it, and when the route was given back.
ROUTE_RECORD_ANNOTATION = "kubestill.io/route-record"
# On a CanaryRollout while it holds the finalizer: its HTTPRoute's name, so the rollouts that may still write a
# route are one labelled LIST away (kubestill's field ownership of a route is given back by the last of them).
ROUTE_LABEL = "kubestill.io/route"

# Where a Pod sees claim <claim> of a pvc://<claim>/<path> URI (the trainer reads PVC_ROOT_ENV first, which
# only the local dev node sets).
PVC_ROOT = "/mnt/kubestill/pvc"
PVC_ROOT_ENV = "KUBESTILL_PVC_ROOT"

# The environment of a trainer Pod (stage Jobs, storage checks), set by the operator's builders and read by the
# trainer: a rename on one side only would be a silent break, so both import these.
NAMESPACE_ENV = "KUBESTILL_NAMESPACE"  # the Pod's namespace (where the report ConfigMap goes)
STAGE_ENV = "KUBESTILL_STAGE"  # label | train | evaluate | export
REPORT_CONFIGMAP_ENV = "KUBESTILL_REPORT_CONFIGMAP"  # report_map_name(<dj>)
REPORT_METADATA_ENV = "KUBESTILL_REPORT_METADATA"  # JSON metadata (labels, owner) the report ConfigMap gets
TEACHER_API_KEY_ENV = "KUBESTILL_TEACHER_API_KEY"  # from teacher.openai.apiKeySecretRef
SCRATCH_DIR_ENV = "KUBESTILL_SCRATCH_DIR"  # local scratch space (downloads of s3:// inputs)
TERMINATION_LOG_ENV = "KUBESTILL_TERMINATION_LOG"  # where a failing process writes its one-paragraph reason
TERMINATION_LOG = "/dev/termination-log"  # the container's terminationMessagePath (Kubernetes' default)
# The trainer's exit code when a gate of the spec refuses the run: the stage Job fails at once, without
# retries (a gate gives the same answer every time), see builders.job.
GATE_EXIT_CODE = 3
# Where a stage Job sees its config: the pod annotation CONFIG_ANNOTATION, projected by the downward API as
# CONFIG_DIR/CONFIG_KEY. Each Job carries the exact config it ran with, and a job costs no ConfigMap write.
CONFIG_DIR = "/etc/kubestill"
CONFIG_KEY = "config.yaml"
CONFIG_ANNOTATION = "kubestill.io/config"
# On a Triton Pod: the digest of the config.pbtxt it serves (a config change rolls the Deployment, and the
# operator reads only the Pods of the current config).
CONFIG_HASH_ANNOTATION = "kubestill.io/config-hash"


def shadow_service_name(rollout: str) -> str:
    """The TraefikService of a CanaryRollout's shadow step mirrored through Traefik: `<rollout>-shadow`; a rollout
    name too long for that (over 246 characters; object names are at most 253) is cut and a digest of it keeps
    the name unique.

    >>> shadow_service_name("sentiment")
    'sentiment-shadow'
    >>> len(shadow_service_name("r" * 253))
    253
    """
    name = f"{rollout}-shadow"
    if len(name) <= 253:
        return name
    digest = hashlib.sha256(rollout.encode()).hexdigest()[:10]
    return f"{rollout[:253 - len(digest) - 8].rstrip('-.')}-{digest}-shadow"


def judge_name(rollout: str) -> str:
    """Deployment and Service of a CanaryRollout's agreement judge: `<rollout>-judge`, cut with a digest like
    shadow_service_name when too long. Services are DNS labels (at most 63 characters), so the cut is at 63.

    >>> judge_name("sentiment")
    'sentiment-judge'
    >>> judge_name("r" * 60)[-18:], len(judge_name("r" * 60))
    ('r-10e100bd54-judge', 63)
    """
    name = f"{rollout}-judge"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(rollout.encode()).hexdigest()[:10]
    return f"{rollout[:63 - len(digest) - 7].rstrip('-.')}-{digest}-judge"


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


def serve_check_job_name(sm_name: str, key: str) -> str:
    """The serving check Job of a StudentModel for a check key (kubestill.logic.served.check_key):
    `<sm>-served-<key>`, the StudentModel's name cut when longer than the 63 characters a Job name may have
    (its Pods carry it as a label value); the key keeps cut names apart.

    >>> serve_check_job_name("sentiment", "0a1b2c3d")
    'sentiment-served-0a1b2c3d'
    >>> len(serve_check_job_name("s" * 80, "0a1b2c3d"))
    63
    """
    suffix = f"-served-{key}"
    return f"{sm_name[:63 - len(suffix)].rstrip('-.')}{suffix}"
