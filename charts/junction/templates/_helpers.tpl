{{/*
The chart's name.
*/}}
{{- define "junction.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name, the prefix of every object. Kept to 50
characters so suffixes such as "-nats-headless" stay within 63.
*/}}
{{- define "junction.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "junction.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels every object carries.
*/}}
{{- define "junction.labels" -}}
helm.sh/chart: {{ include "junction.chart" . }}
app.kubernetes.io/name: {{ include "junction.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels of Junction's pods.
*/}}
{{- define "junction.selectorLabels" -}}
app.kubernetes.io/name: {{ include "junction.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: engine
{{- end }}

{{/*
Selector labels of the NATS pods.
*/}}
{{- define "junction.natsSelectorLabels" -}}
app.kubernetes.io/name: {{ include "junction.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: nats
{{- end }}

{{/*
Names of the NATS objects.
*/}}
{{- define "junction.natsName" -}}
{{- printf "%s-nats" (include "junction.fullname" .) }}
{{- end }}

{{- define "junction.natsHeadless" -}}
{{- printf "%s-nats-headless" (include "junction.fullname" .) }}
{{- end }}

{{- define "junction.natsClusterName" -}}
{{- default (include "junction.fullname" .) .Values.nats.clusterName }}
{{- end }}

{{/*
The NATS client URL Junction connects to: the client Service, which
routes only to ready servers. Once connected, the client also learns every
server's address from the cluster and fails over between them.
*/}}
{{- define "junction.natsURL" -}}
{{- printf "nats://%s.%s.svc.%s:4222" (include "junction.natsName" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/*
The name of the ConfigMap holding the route files.
*/}}
{{- define "junction.routesConfigMap" -}}
{{- if .Values.routes.existingConfigMap }}
{{- .Values.routes.existingConfigMap }}
{{- else }}
{{- printf "%s-routes" (include "junction.fullname" .) }}
{{- end }}
{{- end }}

{{/*
The pod and container security settings both workloads use: a numeric
non-root user (the images' 65532), no privilege escalation, a read-only
root filesystem and no capabilities.
*/}}
{{- define "junction.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "junction.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/*
GOMEMLIMIT for a container from its resources: 90% of limits.memory in MiB
(the Go runtime's soft limit counts only the heap it manages, so the rest
of the process needs headroom below the hard limit, or a busy pod is
OOM-killed before the collector works harder). Empty when no memory limit
is set. Called with (dict "what" "junction.resources" "resources" ...).
*/}}
{{- define "junction.goMemLimit" -}}
{{- $limits := .resources.limits | default dict -}}
{{- $m := toString ($limits.memory | default "") -}}
{{- if $m -}}
{{- $mib := 0 -}}
{{- if regexMatch "^[0-9]+Gi$" $m -}}{{- $mib = mul (atoi (trimSuffix "Gi" $m)) 1024 -}}
{{- else if regexMatch "^[0-9]+Mi$" $m -}}{{- $mib = atoi (trimSuffix "Mi" $m) -}}
{{- else if regexMatch "^[0-9]+G$" $m -}}{{- $mib = div (mul (atoi (trimSuffix "G" $m)) 1000000000) 1048576 -}}
{{- else if regexMatch "^[0-9]+M$" $m -}}{{- $mib = div (mul (atoi (trimSuffix "M" $m)) 1000000) 1048576 -}}
{{- else if regexMatch "^[0-9]+$" $m -}}{{- $mib = div (atoi $m) 1048576 -}}
{{- end -}}
{{- if lt $mib 64 -}}
{{- fail (printf "%s.limits.memory %q: give a whole number of Gi, Mi, G or M of at least 64Mi (the chart sets GOMEMLIMIT to 90%% of it)" .what $m) -}}
{{- end -}}
{{- printf "%dMiB" (div (mul $mib 9) 10) -}}
{{- end -}}
{{- end }}

{{/*
junction.shutdownSeconds is Junction's shutdown_timeout (junction.config,
default 30s) in whole seconds, rounded up. It reads Go durations: "30s",
"1m30s", "90s", "1.5m", "500ms".
*/}}
{{- define "junction.shutdownSeconds" -}}
{{- $d := toString (default "30s" .) -}}
{{- if not (regexMatch "^(0|([0-9]+(\\.[0-9]+)?(h|ms|us|µs|ns|m|s))+)$" $d) -}}
{{- fail (printf "junction.config.shutdown_timeout %q: give a Go duration such as 30s or 1m30s" $d) -}}
{{- end -}}
{{- $total := 0.0 -}}
{{- range $part := regexFindAll "[0-9]+(\\.[0-9]+)?(h|ms|us|µs|ns|m|s)" $d -1 -}}
{{- $num := float64 (regexFind "^[0-9]+(\\.[0-9]+)?" $part) -}}
{{- $unit := regexReplaceAll "^[0-9]+(\\.[0-9]+)?" $part "" -}}
{{- $mul := 1.0 -}}
{{- if eq $unit "h" }}{{ $mul = 3600.0 }}{{ else if eq $unit "m" }}{{ $mul = 60.0 }}{{ else if eq $unit "ms" }}{{ $mul = 0.001 }}{{ else if eq $unit "s" }}{{ $mul = 1.0 }}{{ else }}{{ $mul = 0.000001 }}{{ end -}}
{{- $total = addf $total (mulf $num $mul) -}}
{{- end -}}
{{- ceil $total | int -}}
{{- end }}
