{{/* Chart name, overridable. */}}
{{- define "raylight.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, or the release alone when it already contains the chart name. */}}
{{- define "raylight.fullname" -}}
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

{{- define "raylight.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the release (the generated CRDs include these too). */}}
{{- define "raylight.labels" -}}
helm.sh/chart: {{ include "raylight.chart" . }}
{{ include "raylight.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: raylight
{{- end }}

{{/* Labels that select the operator pod (stable across upgrades: never add to these). */}}
{{- define "raylight.selectorLabels" -}}
app.kubernetes.io/name: {{ include "raylight.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "raylight.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "raylight.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image: repository@digest, or repository:tag with the tag defaulting to appVersion. */}}
{{- define "raylight.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Service in front of the webhook and metrics ports; the webhook configuration points here. */}}
{{- define "raylight.serviceName" -}}
{{- include "raylight.fullname" . }}
{{- end }}

{{- define "raylight.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "raylight.fullname" .) }}
{{- end }}

{{/* Cluster-wide when no namespaces are listed. */}}
{{- define "raylight.clusterWide" -}}
{{- if .Values.watchNamespaces }}false{{ else }}true{{ end }}
{{- end }}
