{{/* The release's name for everything the chart makes (at most 63 characters). */}}
{{- define "lockstep-injector.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lockstep-injector.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "lockstep-injector.labels" -}}
{{ include "lockstep-injector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The Secret holding the serving certificate. */}}
{{- define "lockstep-injector.tlsSecret" -}}
{{- if eq .Values.tls.mode "secret" -}}
{{- required "tls.existingSecret is required with tls.mode=secret" .Values.tls.existingSecret -}}
{{- else -}}
{{- printf "%s-tls" (include "lockstep-injector.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The names the API server may reach the service by. */}}
{{- define "lockstep-injector.dnsNames" -}}
{{- $name := include "lockstep-injector.fullname" . -}}
{{- list $name (printf "%s.%s" $name .Release.Namespace) (printf "%s.%s.svc" $name .Release.Namespace) | toJson -}}
{{- end -}}
