{{/*
Renders Herald's herald.toml from .Values.config. Only keys present in the values are
rendered, so Herald's built-in defaults cover the rest. The chart adds three kinds of keys
itself: admin.listen from adminPort, shutdown.grace_period_secs from
shutdown.gracePeriodSeconds (which also sets terminationGracePeriodSeconds), and one
*_file key per entry of secrets.files.
*/}}
{{- define "herald.config" -}}
{{- $config := deepCopy (.Values.config | default dict) }}
{{- $_ := set $config "admin" (dict "listen" (printf "0.0.0.0:%d" (int .Values.adminPort))) }}
{{- $_ = set $config "shutdown" (dict "grace_period_secs" (int .Values.shutdown.gracePeriodSeconds)) }}
{{- range .Values.secrets.files }}
{{- $node := $config }}
{{- $parts := splitList "." .configKey }}
{{- range initial $parts }}
{{- if not (kindIs "map" (get $node .)) }}
{{- $_ = set $node . dict }}
{{- end }}
{{- $node = get $node . }}
{{- end }}
{{- $_ = set $node (last $parts) (printf "%s/%s" $.Values.secrets.mountPath .key) }}
{{- end }}
{{- include "herald.toml.table" (dict "path" "" "table" $config) }}
{{- end }}

{{/*
Renders one TOML table: its scalar keys under a [path] header, then each nested table.
Go templates range over maps in key order, so the output is stable.
*/}}
{{- define "herald.toml.table" -}}
{{- $table := .table }}
{{- $path := .path }}
{{- $scalars := list }}
{{- $tables := list }}
{{- range $key, $value := $table }}
{{- if kindIs "map" $value }}
{{- $tables = append $tables $key }}
{{- else if not (kindIs "invalid" $value) }}
{{- $scalars = append $scalars $key }}
{{- end }}
{{- end }}
{{- if $scalars }}
{{- if not $path }}
{{- fail (printf "config: keys %s must sit inside a section such as broker or providers.NAME" (join ", " $scalars)) }}
{{- end }}
[{{ $path }}]
{{- range $scalars }}
{{ . }} = {{ include "herald.toml.value" (get $table .) }}
{{- end }}
{{ end }}
{{- range $tables }}
{{- $child := ternary . (printf "%s.%s" $path .) (eq $path "") }}
{{- include "herald.toml.table" (dict "path" $child "table" (get $table .)) }}
{{- end }}
{{- end }}

{{/*
Renders one TOML value. Helm reads YAML numbers as float64, so whole numbers are printed
as integers: Herald's numeric keys are all integers, and 1e+06 would not parse as one.
*/}}
{{- define "herald.toml.value" -}}
{{- $value := . }}
{{- if kindIs "string" $value }}
{{- toJson $value }}
{{- else if kindIs "bool" $value }}
{{- $value }}
{{- else if kindIs "float64" $value }}
{{- if eq (float64 (int64 $value)) $value }}{{ int64 $value }}{{ else }}{{ $value }}{{ end }}
{{- else if or (kindIs "int" $value) (kindIs "int64" $value) }}
{{- $value }}
{{- else if kindIs "slice" $value }}
{{- $items := list }}
{{- range $value }}
{{- $items = append $items (include "herald.toml.value" .) }}
{{- end }}
{{- printf "[%s]" (join ", " $items) }}
{{- else }}
{{- fail (printf "config: value %v has type %s, which herald.toml cannot hold" $value (kindOf $value)) }}
{{- end }}
{{- end }}
