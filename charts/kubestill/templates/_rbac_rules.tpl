{{/*
What the operator does in a namespace it serves, and nothing more. Verbs follow operator/kubestill/clients/.
Deliberately absent: Secrets (the operator hands secretKeyRef to Job env and never reads a Secret), pods/exec,
pods/log, pods/status, deleting the kubestill resources themselves, and anything on CRDs but reading them.
*/}}
{{- define "kubestill.namespacedRules" -}}
# The three kinds: kopf watches them and patches finalizers/annotations; StudentModels are created from a
# finished DistillationJob's export.
- apiGroups: ["kubestill.io"]
  resources: ["distillationjobs", "studentmodels", "canaryrollouts"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["kubestill.io"]
  resources: ["studentmodels"]
  verbs: ["create"]
- apiGroups: ["kubestill.io"]
  resources: ["distillationjobs/status", "studentmodels/status", "canaryrollouts/status"]
  verbs: ["get", "patch", "update"]
# Stage Jobs (label/train/evaluate/export); deleted only to re-run a failed stage.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Stage Pods are read for their termination message (the trainer's failure reason).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Stage config and report ConfigMaps, the Triton config.pbtxt ConfigMap.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# Triton Services and Deployments of StudentModels.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# pvc:// artifact URIs are checked to name an existing claim.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get"]
# CanaryRollouts move weights in an existing HTTPRoute (server-side apply as field manager kubestill-canary).
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "watch", "patch"]
# Events about handler progress and failures (kopf uses core/v1, the operator may use events.k8s.io).
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
