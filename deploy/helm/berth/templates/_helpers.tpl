{{/* The release's objects are called <release>-berth, or <release> when that already says berth. */}}
{{- define "berth.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 57 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 57 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "berth.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "berth.labels" -}}
{{ include "berth.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "berth.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{/* The registry's address: loopback in the host's network namespace. */}}
{{- define "berth.listen" -}}
127.0.0.1:{{ int .Values.registry.port }}
{{- end -}}

{{/*
berth.yaml: the values' config plus the keys the chart owns (they must agree
with the probes, the mounts and the init container). metrics_listen and the
cluster addresses depend on the node, so they come from the environment.
*/}}
{{- define "berth.config" -}}
{{- $c := deepCopy .Values.config -}}
{{- $_ := set $c "listen" (include "berth.listen" .) -}}
{{- $_ := set $c "data_dir" .Values.dataDir -}}
{{- $admin := deepCopy (.Values.config.admin | default dict) -}}
{{- $_ := set $admin "socket" "/run/berth/admin.sock" -}}
{{- $_ := set $c "admin" $admin -}}
{{- if .Values.upstreams -}}
{{- $_ := set $c "upstreams" .Values.upstreams -}}
{{- end -}}
{{- toYaml $c -}}
{{- end -}}

{{/* Inline upstream credentials keep berth.yaml out of a ConfigMap. */}}
{{- define "berth.configInSecret" -}}
{{- range $name, $u := .Values.upstreams -}}
{{- if or $u.username $u.password -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{- define "berth.clusterSecretName" -}}
{{- .Values.cluster.existingSecret | default (printf "%s-cluster" (include "berth.fullname" .)) -}}
{{- end -}}
