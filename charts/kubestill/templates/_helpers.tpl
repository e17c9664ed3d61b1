{{/* Names, labels and the small decisions shared by the templates. */}}

{{- define "kubestill.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped prefix of every resource name (cluster-scoped ones too, so two releases never clash). */}}
{{- define "kubestill.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kubestill.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kubestill.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubestill.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "kubestill.labels" -}}
helm.sh/chart: {{ include "kubestill.chart" . }}
{{ include "kubestill.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubestill
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of the generated CRD templates, which carry app.kubernetes.io/part-of themselves. */}}
{{- define "kubestill.crdLabels" -}}
helm.sh/chart: {{ include "kubestill.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "kubestill.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubestill.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kubestill.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "kubestill.peeringName" -}}
{{- default (include "kubestill.fullname" .) .Values.peering.name }}
{{- end }}

{{/* The namespaces the operator serves in namespaced mode, as a list (the release namespace by default). */}}
{{- define "kubestill.watchedNamespaces" -}}
{{- if .Values.watch.namespaces }}
{{- toYaml (uniq .Values.watch.namespaces) }}
{{- else }}
{{- toYaml (list .Release.Namespace) }}
{{- end }}
{{- end }}

{{/* operator.extraLabels as KUBESTILL_EXTRA_LABELS (key=value,key=value, sorted for a stable manifest). */}}
{{- define "kubestill.extraLabelsEnv" -}}
{{- $pairs := list }}
{{- range $k, $v := .Values.operator.extraLabels }}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) }}
{{- end }}
{{- join "," $pairs }}
{{- end }}

{{/* Combinations the schema cannot explain well; fail with a message that says what to change. */}}
{{- define "kubestill.validate" -}}
{{- if and (not .Values.peering.enabled) (gt (int .Values.replicaCount) 1) }}
{{- fail (printf "replicaCount=%d needs peering.enabled=true: without kopf peering every replica would reconcile the same resources" (int .Values.replicaCount)) }}
{{- end }}
{{- if and (eq .Values.watch.mode "cluster") .Values.watch.namespaces }}
{{- fail "watch.namespaces is only used with watch.mode=namespaced; set watch.mode=namespaced or remove watch.namespaces" }}
{{- end }}
{{- end }}
