{{/*
The chart's name: `app.kubernetes.io/name` and the base of every resource name.
*/}}
{{- define "kubenas.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: the release name when it already holds the chart's name (release "kubenas"
gives "kubenas"), else "<release>-<name>". Truncated at 63 characters (DNS label).
*/}}
{{- define "kubenas.fullname" -}}
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

{{/*
The operator's Deployment, Service, Role(s) and default ServiceAccount: "<fullname>-operator".
*/}}
{{- define "kubenas.operatorName" -}}
{{- printf "%s-operator" (include "kubenas.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The ConfigMap of the children's trainer defaults.
*/}}
{{- define "kubenas.trainerDefaultsName" -}}
{{- printf "%s-trainer-defaults" (include "kubenas.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Chart name and version, as the helm.sh/chart label.
*/}}
{{- define "kubenas.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object the chart makes (the CRDs get only these).
*/}}
{{- define "kubenas.commonLabels" -}}
helm.sh/chart: {{ include "kubenas.chart" . }}
app.kubernetes.io/name: {{ include "kubenas.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: kubenas
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels on the operator's objects.
*/}}
{{- define "kubenas.labels" -}}
{{ include "kubenas.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
What the Deployment, Service, ServiceMonitor and PodMonitor select on: stable across upgrades
(a Deployment's selector is immutable), so no version or chart label.
*/}}
{{- define "kubenas.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubenas.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
The ServiceAccount the operator runs as.
*/}}
{{- define "kubenas.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubenas.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from {repository, tag}; the tag defaults to the chart's appVersion.
Usage: include "kubenas.imageRef" (dict "image" .Values.image "context" $)
*/}}
{{- define "kubenas.imageRef" -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .context.Chart.AppVersion | toString) }}
{{- end }}

{{- define "kubenas.image" -}}
{{- include "kubenas.imageRef" (dict "image" .Values.image "context" .) }}
{{- end }}

{{- define "kubenas.trainerImage" -}}
{{- include "kubenas.imageRef" (dict "image" .Values.trainer.image "context" .) }}
{{- end }}

{{/*
The namespaces the operator watches, one per line: none in cluster scope (it watches all).
*/}}
{{- define "kubenas.watchedNamespaces" -}}
{{- if eq .Values.watch.scope "namespace" }}
{{- .Release.Namespace }}
{{- else if eq .Values.watch.scope "namespaces" }}
{{- if not .Values.watch.namespaces }}
{{- fail "watch.scope=namespaces needs at least one namespace in watch.namespaces" }}
{{- end }}
{{- join "\n" (uniq .Values.watch.namespaces) }}
{{- end }}
{{- end }}

{{/*
The Prometheus `job` label of the operator's metrics, for KubenasOperatorDown: set, or what
the chart's own scrape config gives (a ServiceMonitor: the Service's name; a PodMonitor
alone: "<namespace>/<podmonitor name>").
*/}}
{{- define "kubenas.operatorJob" -}}
{{- if .Values.prometheusRule.operatorJob }}
{{- .Values.prometheusRule.operatorJob }}
{{- else if and .Values.podMonitor.enabled (not .Values.serviceMonitor.enabled) }}
{{- printf "%s/%s" .Release.Namespace (include "kubenas.operatorName" .) }}
{{- else }}
{{- include "kubenas.operatorName" . }}
{{- end }}
{{- end }}

{{/*
A number of minutes as the alerts word it: "an hour" for 60, else "<n> minutes".
*/}}
{{- define "kubenas.minutesInWords" -}}
{{- if eq (int .) 60 }}an hour{{ else if eq (int .) 1 }}a minute{{ else }}{{ . }} minutes{{ end }}
{{- end }}

{{/*
A Prometheus duration as the alerts word it: "5m" is "5 minutes", "1h" is "1 hour"; others as they are.
*/}}
{{- define "kubenas.durationInWords" -}}
{{- $units := dict "s" "second" "m" "minute" "h" "hour" "d" "day" }}
{{- if regexMatch "^[0-9]+[smhd]$" . }}
{{- $n := regexFind "^[0-9]+" . }}
{{- $unit := get $units (trimPrefix $n .) }}
{{- printf "%s %s%s" $n $unit (ternary "" "s" (eq $n "1")) }}
{{- else }}
{{- . }}
{{- end }}
{{- end }}
