{{/*
What the operator does in a namespace it serves, and nothing more: the verbs are those of the requests in
operator/kubestill/clients/ and handlers/ (tests/chart/test_rbac.py holds the table). Deliberately absent:
Secrets (the operator hands secretKeyRef to Job env; it never reads a Secret), pods/exec, pods/log,
pods/status, any delete but a shadow step's TraefikService (children go with their owner through garbage
collection), and CRD changes.
*/}}
{{- define "kubestill.namespacedRules" -}}
# The three kinds: watched (kopf event handlers and in-memory indexes);
# StudentModels are created, and their spec patched, from a finished DistillationJob's export;
# CanaryRollouts get the kubestill.io/route-restore finalizer and route-record annotation (metadata patches).
- apiGroups: ["kubestill.io"]
  resources: ["distillationjobs", "studentmodels", "canaryrollouts"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["kubestill.io"]
  resources: ["studentmodels"]
  verbs: ["create", "patch"]
- apiGroups: ["kubestill.io"]
  resources: ["canaryrollouts"]
  verbs: ["patch"]
# Status is written with merge patches on the status subresource only.
- apiGroups: ["kubestill.io"]
  resources: ["distillationjobs/status", "studentmodels/status", "canaryrollouts/status"]
  verbs: ["patch"]
# Stage Jobs (label/train/evaluate/export), storage checks of s3:// URIs and StudentModels' serving checks, watched to
# follow them (one serving check Job per StudentModel generation, removed with the StudentModel by ownerReferences).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create"]
# Stage, check and Triton Pods are read for their termination message (the trainer's failure reason, a serving check's
# figures, why a model does not load).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Report ConfigMaps (the trainer's progress and metrics; the stage config travels in a pod annotation), Triton's config.pbtxt.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Triton Deployments (watched for readiness) and Services of StudentModels.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "create", "patch"]
# pvc:// artifact URIs are checked to name an existing claim before any GPU is spent.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get"]
# CanaryRollouts move weights in an existing HTTPRoute (server-side apply as field manager kubestill-canary),
# and give the route back when done (a merge patch of its managedFields).
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "watch", "patch"]
# A CanaryRollout shadow step mirrored through Traefik (spec.shadow.mirror: TraefikService): the rollout's
# TraefikService is read and server-side applied for the step, and deleted when it ends (the garbage collector
# would delete it only with the rollout).
- apiGroups: ["traefik.io"]
  resources: ["traefikservices"]
  verbs: ["get", "create", "patch", "delete"]
# Events about progress, gates, rollbacks and failures.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* kopf's framework needs in cluster mode: the ClusterKopfPeering and CRD observation (read only). */}}
{{- define "kubestill.clusterFrameworkRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- if .Values.peering.enabled }}
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}

{{/* kopf's framework needs in namespaced mode: the KopfPeering of each watched namespace. */}}
{{- define "kubestill.namespacedFrameworkRules" -}}
{{- if .Values.peering.enabled }}
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}
