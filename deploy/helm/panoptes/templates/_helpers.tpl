{{/*
Names, labels, the parsed topology, the worker units and what every pod shares.
*/}}

{{- define "panoptes.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "panoptes.fullname" -}}
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

{{/* A resource name: the full name, a dash, a suffix; at most 63 characters. */}}
{{- define "panoptes.child" -}}
{{- printf "%s-%s" (include "panoptes.fullname" .ctx) .suffix | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "panoptes.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "panoptes.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: panoptes
{{- end }}

{{/* Selector labels of one workload: ctx, component, and for workers the unit's key. */}}
{{- define "panoptes.selectorLabels" -}}
app.kubernetes.io/name: {{ include "panoptes.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- with .unit }}
panoptes.io/unit: {{ . }}
{{- end }}
{{- with .group }}
panoptes.io/ingest-group: {{ . }}
{{- end }}
{{- end }}

{{/* The topology's text: topology.content, else the chart's copy of the quickstart. */}}
{{- define "panoptes.topologyText" -}}
{{- if .Values.topology.content }}
{{- .Values.topology.content }}
{{- else }}
{{- .Files.Get "files/quickstart.yaml" }}
{{- end }}
{{- end }}

{{/*
What the chart needs of the topology, as JSON: namespace, partitions, delivery (with the
binary's defaults), camera IDs, stages (id, kind, input with defaults as in
topology/src/lib.rs stage_inputs), whether it has outputs and a record section.
*/}}
{{- define "panoptes.topology" -}}
{{- $text := include "panoptes.topologyText" . }}
{{- $t := fromYaml $text }}
{{- if hasKey $t "Error" }}
{{- fail (printf "topology.content is not valid YAML: %s" $t.Error) }}
{{- end }}
{{- if not $t.stages }}
{{- fail "the topology (topology.content) has no `stages`" }}
{{- end }}
{{- $stages := list }}
{{- $prev := "frames" }}
{{- range $s := $t.stages }}
{{- $id := toString $s.id }}
{{- $input := $prev }}
{{- if $s.input }}{{ $input = toString $s.input }}{{ end }}
{{- $stages = append $stages (dict "id" $id "kind" (toString $s.kind) "input" $input) }}
{{- $prev = $id }}
{{- end }}
{{- $cameras := list }}
{{- range $c := ($t.cameras | default list) }}
{{- $cameras = append $cameras (toString $c.id) }}
{{- end }}
{{- $ns := "panoptes" }}
{{- if hasKey $t "namespace" }}{{ $ns = toString $t.namespace }}{{ end }}
{{- $partitions := 16 }}
{{- if hasKey $t "partitions" }}{{ $partitions = int $t.partitions }}{{ end }}
{{- $delivery := "live" }}
{{- if hasKey $t "delivery" }}{{ $delivery = toString $t.delivery }}{{ end }}
{{- toJson (dict "namespace" $ns "partitions" $partitions "delivery" $delivery "stages" $stages "cameras" $cameras "outputs" (len ($t.outputs | default list)) "record" (hasKey $t "record")) }}
{{- end }}

{{/* A name as pipeline/src/lease.rs `token` makes it safe for NATS: [A-Za-z0-9_-] kept. */}}
{{- define "panoptes.token" -}}
{{- regexReplaceAll "[^A-Za-z0-9_-]" . "_" }}
{{- end }}

{{/*
The worker units, as JSON {"units": [...]}: one per item of workers.units, or one running every
stage. Each: key (resource name part, "" for the single unit), name (the unit name of
topology/src/plan.rs: its non-sink stages in topology order joined by `_`, which names its
leases and durable consumers), stages, input (what its first stages read), stream (the
JetStream stream of that input, pipeline/src/durable.rs stream_name), and its settings: the
workers defaults with the unit's own keys replacing them (autoscaling merged key by key).
*/}}
{{- define "panoptes.units" -}}
{{- $topo := include "panoptes.topology" . | fromJson }}
{{- $w := .Values.workers }}
{{- $defaults := dict "replicas" $w.replicas "resources" $w.resources "nodeSelector" $w.nodeSelector "tolerations" $w.tolerations "affinity" $w.affinity "gpu" $w.gpu "runtimeClassName" $w.runtimeClassName "terminationGracePeriodSeconds" .Values.terminationGracePeriodSeconds "env" list "extraVolumes" list "extraVolumeMounts" list "image" dict "strategy" $w.strategy }}
{{- $items := $w.units | default list }}
{{- if not $items }}
{{- $all := list }}
{{- range $s := $topo.stages }}{{ if ne $s.kind "sink" }}{{ $all = append $all $s.id }}{{ end }}{{ end }}
{{- $items = list (dict "name" "" "stages" $all "single" true) }}
{{- end }}
{{- $known := dict }}
{{- range $s := $topo.stages }}{{ $_ := set $known $s.id $s }}{{ end }}
{{- $owner := dict }}
{{- $keys := dict }}
{{- $units := list }}
{{- range $item := $items }}
  {{- $key := toString ($item.name | default "") }}
  {{- if and (not $item.single) (not (regexMatch "^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$" $key)) }}
  {{- fail (printf "workers.units: name %q must be 1-32 lowercase letters, digits or dashes (it is part of resource names)" $key) }}
  {{- end }}
  {{- if hasKey $keys $key }}
  {{- fail (printf "workers.units: two units are named %q" $key) }}
  {{- end }}
  {{- $_ := set $keys $key true }}
  {{- if not $item.stages }}
  {{- fail (printf "workers.units[%s]: no stages" $key) }}
  {{- end }}
  {{- $mine := dict }}
  {{- range $id := $item.stages }}
    {{- $id = toString $id }}
    {{- if not (hasKey $known $id) }}
    {{- fail (printf "workers.units[%s]: the topology has no stage %q" $key $id) }}
    {{- end }}
    {{- if eq (get $known $id).kind "sink" }}
    {{- fail (printf "workers.units[%s]: %q is a sink stage; it runs in the unit of the stage it reads" $key $id) }}
    {{- end }}
    {{- if hasKey $owner $id }}
    {{- fail (printf "workers.units: stage %q is in units %q and %q; each stage runs in one unit" $id (get $owner $id) $key) }}
    {{- end }}
    {{- $_ := set $owner $id $key }}
    {{- $_ := set $mine $id true }}
  {{- end }}
  {{- /* The unit name and input, as topology::Plan computes them. */}}
  {{- $ordered := list }}
  {{- $entry := list }}
  {{- range $s := $topo.stages }}
    {{- if and (ne $s.kind "sink") (hasKey $mine $s.id) }}
      {{- $ordered = append $ordered $s.id }}
      {{- if or (eq $s.input "frames") (not (hasKey $mine $s.input)) }}
        {{- if not (has $s.input $entry) }}{{ $entry = append $entry $s.input }}{{ end }}
      {{- end }}
    {{- end }}
  {{- end }}
  {{- if ne (len $entry) 1 }}
  {{- fail (printf "workers.units[%s]: its stages read %s; a unit's first stages must read one input" $key (join " and " $entry)) }}
  {{- end }}
  {{- $input := index $entry 0 }}
  {{- $u := deepCopy $defaults }}
  {{- range $k, $v := $item }}
    {{- if and (ne $k "autoscaling") (ne $k "single") }}{{ $_ := set $u $k $v }}{{ end }}
  {{- end }}
  {{- $as := deepCopy $.Values.autoscaling }}
  {{- range $kind, $over := ($item.autoscaling | default dict) }}
    {{- if not (hasKey $as $kind) }}
    {{- fail (printf "workers.units[%s].autoscaling: unknown key %q (keda, hpa)" $key $kind) }}
    {{- end }}
    {{- range $k, $v := $over }}{{ $_ := set (get $as $kind) $k $v }}{{ end }}
  {{- end }}
  {{- $_ := set $u "autoscaling" $as }}
  {{- $_ := set $u "key" $key }}
  {{- $_ := set $u "stages" $ordered }}
  {{- $_ := set $u "single" (default false $item.single) }}
  {{- $_ := set $u "unit" (include "panoptes.token" (join "_" $ordered)) }}
  {{- $_ := set $u "input" $input }}
  {{- $_ := set $u "stream" (printf "%s-%s" (include "panoptes.token" $topo.namespace) (include "panoptes.token" $input)) }}
  {{- $units = append $units $u }}
{{- end }}
{{- range $s := $topo.stages }}
  {{- if and (ne $s.kind "sink") (not (hasKey $owner $s.id)) }}
  {{- fail (printf "workers.units: stage %q is in no unit; its items would never be processed" $s.id) }}
  {{- end }}
{{- end }}
{{- toJson (dict "units" $units) }}
{{- end }}

{{/* The name of the NATS subchart's resources (its nats.fullname). */}}
{{- define "panoptes.natsFullname" -}}
{{- $nats := .Values.nats | default dict }}
{{- if $nats.fullnameOverride }}
{{- $nats.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default "nats" $nats.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Where every process connects. */}}
{{- define "panoptes.natsUrl" -}}
{{- if .Values.natsUrl }}
{{- .Values.natsUrl }}
{{- else if .Values.nats.enabled }}
{{- printf "nats://%s.%s.svc.%s:%v" (include "panoptes.natsFullname" .) .Release.Namespace .Values.clusterDomain (dig "config" "nats" "port" 4222 .Values.nats) }}
{{- else }}
{{- fail "nats.enabled is false: set natsUrl to your NATS server (with JetStream)" }}
{{- end }}
{{- end }}

{{/* The NATS monitoring endpoint KEDA reads (host:port). */}}
{{- define "panoptes.natsMonitoring" -}}
{{- $keda := .keda }}
{{- if $keda.natsMonitoringEndpoint }}
{{- $keda.natsMonitoringEndpoint }}
{{- else if .ctx.Values.nats.enabled }}
{{- printf "%s-headless.%s.svc.%s:%v" (include "panoptes.natsFullname" .ctx) .ctx.Release.Namespace .ctx.Values.clusterDomain (dig "config" "monitor" "port" 8222 .ctx.Values.nats) }}
{{- else }}
{{- fail "autoscaling.keda needs autoscaling.keda.natsMonitoringEndpoint (host:port of your NATS server's monitoring port) when nats.enabled is false" }}
{{- end }}
{{- end }}

{{/* Where the topology is mounted: beside /opt/panoptes/models and operators, as in a checkout. */}}
{{- define "panoptes.topologyPath" -}}
/opt/panoptes/config/topology.yaml
{{- end }}

{{/* Pod annotations: the topology's checksum (rolls pods on a change, unless told not to). */}}
{{- define "panoptes.podAnnotations" -}}
{{- if .Values.topology.rollOnChange }}
checksum/topology: {{ include "panoptes.topologyText" . | sha256sum }}
{{- end }}
{{- end }}

{{/* Environment of every panoptes container. */}}
{{- define "panoptes.env" -}}
- name: HOME
  value: /home/panoptes
- name: PANOPTES_NATS_URL
  value: {{ include "panoptes.natsUrl" . | quote }}
- name: PANOPTES_STOP_TIMEOUT
  value: {{ .Values.stopTimeoutSeconds | quote }}
- name: PANOPTES_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
{{- with .Values.log.rustLog }}
- name: RUST_LOG
  value: {{ . | quote }}
{{- end }}
{{- with .Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $.Values.otel.protocol | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $.Values.otel.sampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $.Values.otel.samplerArg | quote }}
{{- end }}
{{- with .Values.natsAuth }}
{{- if .secretName }}
{{- range $var, $key := dict "PANOPTES_NATS_USER" .userKey "PANOPTES_NATS_PASSWORD" .passwordKey "PANOPTES_NATS_TOKEN" .tokenKey }}
{{- if $key }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.natsAuth.secretName }}
      key: {{ $key }}
{{- end }}
{{- end }}
{{- if .credsKey }}
- name: PANOPTES_NATS_CREDS
  value: /etc/panoptes/nats/nats.creds
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.env }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The metrics and health listener, for roles that serve it. */}}
{{- define "panoptes.metricsEnv" -}}
- name: PANOPTES_METRICS
  value: {{ printf "0.0.0.0:%v" .Values.metrics.port | quote }}
{{- end }}

{{/*
The metrics port (plus `ports`) and probes on it: ready once connected to NATS and started
(/readyz), alive while it answers (/healthz). Input: ctx, ports (more container ports).
*/}}
{{- define "panoptes.probes" -}}
ports:
  - name: metrics
    containerPort: {{ .ctx.Values.metrics.port }}
    protocol: TCP
{{- with .ports }}
  {{- toYaml . | nindent 2 }}
{{- end }}
startupProbe:
  httpGet: { path: /healthz, port: metrics }
  periodSeconds: 5
  failureThreshold: 60
readinessProbe:
  httpGet: { path: /readyz, port: metrics }
  periodSeconds: 5
  failureThreshold: 3
livenessProbe:
  httpGet: { path: /healthz, port: metrics }
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 6
{{- end }}

{{/* Volumes of every pod: the topology, writable caches, NATS credentials, extras (plus `extra`). */}}
{{- define "panoptes.volumes" -}}
- name: topology
  configMap:
    name: {{ include "panoptes.child" (dict "ctx" .ctx "suffix" "topology") }}
- name: cache
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- with .ctx.Values.natsAuth }}
{{- if and .secretName .credsKey }}
- name: nats-creds
  secret:
    secretName: {{ .secretName }}
    items:
      - key: {{ .credsKey }}
        path: nats.creds
{{- end }}
{{- end }}
{{- with .ctx.Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "panoptes.volumeMounts" -}}
- name: topology
  mountPath: /opt/panoptes/config
  readOnly: true
- name: cache
  mountPath: /home/panoptes/.cache
- name: tmp
  mountPath: /tmp
{{- with .ctx.Values.natsAuth }}
{{- if and .secretName .credsKey }}
- name: nats-creds
  mountPath: /etc/panoptes/nats
  readOnly: true
{{- end }}
{{- end }}
{{- with .ctx.Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The image of a workload: the chart's, or an override {repository, tag}. */}}
{{- define "panoptes.image" -}}
{{- $img := mergeOverwrite (deepCopy .ctx.Values.image) (.override | default dict) }}
{{- printf "%s:%s" $img.repository (toString $img.tag) }}
{{- end }}

{{/* Scheduling of a pod: nodeSelector, tolerations, affinity from a settings dict. */}}
{{- define "panoptes.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
