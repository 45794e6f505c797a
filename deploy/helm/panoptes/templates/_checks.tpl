{{/*
Values that cannot work together fail the render with a message saying what to change. Run from
the topology ConfigMap, which every release renders. (The worker units are checked where they are
computed, in _helpers.tpl "panoptes.units".)
*/}}
{{/*
The `mappings` the NATS chart writes into nats.conf, as JSON: config.merge.mappings, then the
JSON-patch operations of config.patch on /mappings and /mappings/<subject> (add, replace,
remove), in order, as the NATS chart applies them.
*/}}
{{- define "panoptes.natsMappings" -}}
{{- $m := deepCopy (dig "config" "merge" "mappings" dict .Values.nats) }}
{{- range $op := (dig "config" "patch" list .Values.nats) }}
  {{- $path := toString $op.path }}
  {{- if and (eq $path "/mappings") (has $op.op (list "add" "replace")) }}
    {{- $m = deepCopy ($op.value | default dict) }}
  {{- else if and (eq $path "/mappings") (eq $op.op "remove") }}
    {{- $m = dict }}
  {{- else if hasPrefix "/mappings/" $path }}
    {{- $k := trimPrefix "/mappings/" $path | replace "~1" "/" | replace "~0" "~" }}
    {{- if has $op.op (list "add" "replace") }}{{ $_ := set $m $k $op.value }}{{ end }}
    {{- if eq $op.op "remove" }}{{ $_ := unset $m $k }}{{ end }}
  {{- end }}
{{- end }}
{{- toJson $m }}
{{- end }}

{{- define "panoptes.checks" -}}
{{- $topo := include "panoptes.topology" . | fromJson }}
{{- $ns := $topo.namespace }}
{{- $p := int $topo.partitions }}

{{- /* The NATS subchart's partition mapping must be the topology's. */}}
{{- if .Values.nats.enabled }}
  {{- $key := printf "%s.frames.*" $ns }}
  {{- $want := printf "%s.frames.%s.%s" $ns "{{wildcard(1)}}" (printf "{{partition(%d,1)}}" $p) }}
  {{- $mappings := include "panoptes.natsMappings" . | fromJson }}
  {{- $how := printf "set nats.config.patch to [{op: add, path: /mappings, value: {%q: %q}}]" $key $want }}
  {{- if not (hasKey $mappings $key) }}
  {{- fail (printf "the NATS mappings (nats.config.patch, nats.config.merge) have no entry for %q, but the topology's namespace is %q with %d partitions: %s" $key $ns $p $how) }}
  {{- end }}
  {{- if ne (toString (get $mappings $key)) $want }}
  {{- fail (printf "the NATS mapping of %q is %q, but the topology has %d partitions: it must be %q (%s)" $key (toString (get $mappings $key)) $p $want $how) }}
  {{- end }}
  {{- range $k, $v := $mappings }}
  {{- if and (hasSuffix ".frames.*" $k) (ne $k $key) }}
  {{- fail (printf "the NATS mappings map %q, but the topology's namespace is %q: %s" $k $ns $how) }}
  {{- end }}
  {{- end }}
  {{- if not (dig "config" "jetstream" "enabled" false .Values.nats) }}
  {{- fail "nats.config.jetstream.enabled must be true: worker leases (NATS KV) and durable delivery need JetStream" }}
  {{- end }}
{{- end }}
{{- $_ := include "panoptes.natsUrl" . }}

{{- /* SIGTERM must be able to finish before SIGKILL. */}}
{{- $stop := int .Values.stopTimeoutSeconds }}
{{- if le (int .Values.terminationGracePeriodSeconds) $stop }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed stopTimeoutSeconds (%d): a worker stopped by SIGTERM publishes what it holds and hands its partitions back within the stop timeout, and Kubernetes kills it at the grace period" (int .Values.terminationGracePeriodSeconds) $stop) }}
{{- end }}

{{- /* Worker units and their autoscaling. */}}
{{- range $u := (include "panoptes.units" . | fromJson).units }}
  {{- $name := ternary "workers" (printf "workers.units[%s]" $u.key) $u.single }}
  {{- if le (int $u.terminationGracePeriodSeconds) $stop }}
  {{- fail (printf "%s: terminationGracePeriodSeconds (%d) must exceed stopTimeoutSeconds (%d)" $name (int $u.terminationGracePeriodSeconds) $stop) }}
  {{- end }}
  {{- $keda := $u.autoscaling.keda }}
  {{- $hpa := $u.autoscaling.hpa }}
  {{- if and $keda.enabled $hpa.enabled }}
  {{- fail (printf "%s: autoscaling.keda and autoscaling.hpa are both enabled; choose one (KEDA for durable delivery, the CPU HPA otherwise)" $name) }}
  {{- end }}
  {{- if $keda.enabled }}
    {{- if ne $topo.delivery "durable" }}
    {{- fail (printf "%s: autoscaling.keda scales on the backlog of the durable JetStream consumers, but the topology's delivery is %q: set `delivery: durable` in the topology or use autoscaling.hpa" $name $topo.delivery) }}
    {{- end }}
    {{- if lt (int $keda.minReplicas) 1 }}
    {{- fail (printf "%s: autoscaling.keda.minReplicas must be at least 1: the unit's workers create its consumers and hold its leases" $name) }}
    {{- end }}
    {{- if gt (int $keda.maxReplicas) $p }}
    {{- fail (printf "%s: autoscaling.keda.maxReplicas (%d) exceeds the topology's partitions (%d); a worker beyond them would hold no partition" $name (int $keda.maxReplicas) $p) }}
    {{- end }}
    {{- $_ := include "panoptes.natsMonitoring" (dict "ctx" $ "keda" $keda) }}
  {{- end }}
  {{- if and $hpa.enabled (not (dig "requests" "cpu" "" ($u.resources | default dict))) }}
  {{- fail (printf "%s: autoscaling.hpa scales on CPU utilisation, which needs a CPU request in the unit's resources" $name) }}
  {{- end }}
  {{- if lt (int $u.gpu) 0 }}
  {{- fail (printf "%s: gpu must not be negative" $name) }}
  {{- end }}
{{- end }}

{{- /* Ingest groups: each camera in one group, every camera known. */}}
{{- if .Values.ingest.enabled }}
  {{- $groups := .Values.ingest.groups | default list }}
  {{- if not $groups }}
  {{- fail "ingest.groups is empty: add a group (or set ingest.enabled=false)" }}
  {{- end }}
  {{- $seen := dict }}
  {{- $names := dict }}
  {{- range $g := $groups }}
    {{- $gname := toString $g.name }}
    {{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$" $gname) }}
    {{- fail (printf "ingest.groups: name %q must be 1-32 lowercase letters, digits or dashes" $gname) }}
    {{- end }}
    {{- if hasKey $names $gname }}
    {{- fail (printf "ingest.groups: two groups are named %q" $gname) }}
    {{- end }}
    {{- $_ := set $names $gname true }}
    {{- $kind := $g.kind | default "Deployment" }}
    {{- if not (has $kind (list "Deployment" "DaemonSet")) }}
    {{- fail (printf "ingest.groups[%s].kind is %q: Deployment or DaemonSet" $gname $kind) }}
    {{- end }}
    {{- $cams := $g.cameras | default $topo.cameras }}
    {{- if and (not $g.cameras) (gt (len $groups) 1) }}
    {{- fail (printf "ingest.groups[%s] has no cameras, so it would ingest every camera, as the other groups do some: list its cameras" $gname) }}
    {{- end }}
    {{- range $c := $cams }}
      {{- if not (has (toString $c) $topo.cameras) }}
      {{- fail (printf "ingest.groups[%s]: the topology has no camera %q" $gname (toString $c)) }}
      {{- end }}
      {{- if hasKey $seen (toString $c) }}
      {{- fail (printf "camera %q is in ingest groups %q and %q; a camera must be ingested by one process" (toString $c) (get $seen (toString $c)) $gname) }}
      {{- end }}
      {{- $_ := set $seen (toString $c) $gname }}
    {{- end }}
  {{- end }}
{{- end }}

{{- /* Roles that need a section of the topology. */}}
{{- if and .Values.sink.enabled (eq (int $topo.outputs) 0) }}
{{- fail "sink.enabled: the topology declares no `outputs` for a sink to run" }}
{{- end }}
{{- if and .Values.recorder.enabled (not $topo.record) }}
{{- fail "recorder.enabled: the topology has no `record` section" }}
{{- end }}
{{- end }}
