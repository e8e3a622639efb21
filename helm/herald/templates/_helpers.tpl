{{/* Chart name, truncated to the 63 characters a label value may hold. */}}
{{- define "herald.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "herald.fullname" -}}
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

{{- define "herald.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object, without a component. */}}
{{- define "herald.commonLabels" -}}
helm.sh/chart: {{ include "herald.chart" . }}
app.kubernetes.io/name: {{ include "herald.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels of the worker's objects. */}}
{{- define "herald.labels" -}}
{{ include "herald.commonLabels" . }}
app.kubernetes.io/component: worker
{{- end }}

{{/*
Labels that select the worker's pods. The component keeps the migration Job's pods out of
the Service, the PodDisruptionBudget and the autoscalers.
*/}}
{{- define "herald.selectorLabels" -}}
app.kubernetes.io/name: {{ include "herald.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: worker
{{- end }}

{{- define "herald.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "herald.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "herald.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Name of the Secret that holds the broker URL and provider credentials. */}}
{{- define "herald.secretName" -}}
{{- if .Values.secrets.create }}
{{- include "herald.fullname" . }}
{{- else }}
{{- required "secrets.existingSecret is required when secrets.create is false" .Values.secrets.existingSecret }}
{{- end }}
{{- end }}

{{/* Work queue name: config.broker.queue, else Herald's built-in default. */}}
{{- define "herald.queueName" -}}
{{- $broker := .Values.config.broker | default dict }}
{{- $broker.queue | default "herald.jobs" }}
{{- end }}

{{/* Fails rendering on value combinations the schema cannot express. */}}
{{- define "herald.validate" -}}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "autoscaling.enabled and keda.enabled are mutually exclusive: KEDA creates its own HorizontalPodAutoscaler" }}
{{- end }}
{{- if and .Values.keda.enabled (not .Values.secrets.brokerUrlKey) }}
{{- fail "keda.enabled needs secrets.brokerUrlKey: KEDA reads the RabbitMQ host from the broker URL in the Secret" }}
{{- end }}
{{- $fileKeys := list }}
{{- range .Values.secrets.files }}
{{- $fileKeys = append $fileKeys .configKey }}
{{- end }}
{{- range .Values.secrets.env }}
{{- if has (printf "%s_file" .configKey) $fileKeys }}
{{- fail (printf "secrets.env sets %s and secrets.files sets %s_file: Herald accepts only one of the two" .configKey .configKey) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Label matchers that select this release's series in alert expressions. */}}
{{- define "herald.metricSelector" -}}
{{- .Values.prometheusRule.selector | default (printf "job=%q,namespace=%q" (include "herald.fullname" .) .Release.Namespace) }}
{{- end }}

{{/*
max_in_flight of each provider, for the in-flight saturation alerts: the value under
config.providers when set, else Herald's built-in default for the provider names that
config/default.toml defines. .ci/helm-check compares these defaults with that file.
*/}}
{{- define "herald.maxInFlight" -}}
{{- $caps := dict "sendgrid" 32 "twilio" 16 "fcm" 64 "apns" 64 "webpush" 64 "smtp" 8 "webhook" 32 }}
{{- range $name, $provider := (.Values.config.providers | default dict) }}
{{- if and (kindIs "map" $provider) (hasKey $provider "max_in_flight") }}
{{- $_ := set $caps $name (int $provider.max_in_flight) }}
{{- end }}
{{- end }}
{{- toYaml $caps }}
{{- end }}
