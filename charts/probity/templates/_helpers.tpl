{{/* The image, its tag the chart's appVersion unless set. */}}
{{- define "probity.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The rules probity's account needs over HealthChecks and their pods (README, "In a cluster"). */}}
{{- define "probity.rules" -}}
# The checks: watched (one LIST at start-up and after a lost watch), status written; patched
# for manual run requests and the finalizer probity.dev/resolve-alerts (held while an alert is
# open, so a deleted check is resolved before it goes).
- apiGroups: [kuberhealthy.github.io]
  resources: [healthchecks]
  verbs: [get, list, watch, patch]
- apiGroups: [kuberhealthy.github.io]
  resources: [healthchecks/status]
  verbs: [get, update]
# The check pods: created per run, watched, deleted at the deadline and by retention.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, delete]
# The logs of retained check pods, shown on each check's page.
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
{{- if .Values.rbac.execProbes }}
# exec probes (spec.probe.exec with podSelector) run their command in a pod. Both verbs: the API
# server authorizes an exec over WebSocket as `get`, over SPDY as `create`.
- apiGroups: [""]
  resources: [pods/exec]
  verbs: [get, create]
{{- end }}
# Warning events on checks (invalid spec, failed runs).
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- with .Values.rbac.extraRules }}
{{ toYaml . }}
{{- end }}
{{- end -}}
