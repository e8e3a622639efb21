{{/*
Pod parts shared by the Deployment and the migration Job, so both run Herald with the same
configuration and secrets. Each takes a dict with the root context as "root" and the
ConfigMap and Secret names as "configMap" and "secret".
*/}}

{{/* Environment: the broker and ledger URLs and every secrets.env entry, from the Secret. */}}
{{- define "herald.env" -}}
{{- $root := .root }}
{{- $secret := .secret }}
{{- with $root.Values.secrets.brokerUrlKey }}
- name: HERALD__BROKER__URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ . }}
{{- end }}
{{- with $root.Values.secrets.ledgerUrlKey }}
- name: HERALD__LEDGER__URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ . }}
{{- end }}
{{- range $root.Values.secrets.env }}
- name: {{ printf "HERALD__%s" (.configKey | replace "." "__" | upper) }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ .key }}
{{- end }}
{{- with $root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "herald.volumeMounts" -}}
- name: config
  mountPath: /etc/herald/herald.toml
  subPath: herald.toml
  readOnly: true
{{- if .root.Values.secrets.files }}
- name: secrets
  mountPath: {{ .root.Values.secrets.mountPath }}
  readOnly: true
{{- end }}
- name: tmp
  mountPath: /tmp
{{- end }}

{{- define "herald.volumes" -}}
- name: config
  configMap:
    name: {{ .configMap }}
{{- with .root.Values.secrets.files }}
- name: secrets
  secret:
    secretName: {{ $.secret }}
    defaultMode: 0440
    items:
      {{- range . }}
      - key: {{ .key }}
        path: {{ .key }}
      {{- end }}
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 16Mi
{{- end }}

{{- define "herald.podScheduling" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
