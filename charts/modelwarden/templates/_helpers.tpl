{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "modelwarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, plus the chart name unless the release name contains it. */}}
{{- define "modelwarden.fullname" -}}
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

{{- define "modelwarden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelwarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "modelwarden.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "modelwarden.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelwarden
{{- end }}

{{- define "modelwarden.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelwarden.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "modelwarden.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The metrics Service's name; also the `job` label Prometheus gives the operator's series. */}}
{{- define "modelwarden.metricsService" -}}
{{- printf "%s-metrics" (include "modelwarden.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* --pod-monitor-labels=k=v,... from .Values.podMonitors.labels, sorted by key. */}}
{{- define "modelwarden.podMonitorLabels" -}}
{{- $pairs := list -}}
{{- range $key, $value := (.Values.podMonitors | default dict).labels -}}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- printf "--pod-monitor-labels=%s" (join "," $pairs) -}}
{{- end -}}

{{/* An IP address as a URL host: IPv6 in brackets. */}}
{{- define "modelwarden.urlHost" -}}
{{- if contains ":" . }}{{ printf "[%s]" . }}{{ else }}{{ . }}{{ end -}}
{{- end -}}
