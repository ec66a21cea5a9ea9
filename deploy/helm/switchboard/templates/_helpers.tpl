{{/* Names ------------------------------------------------------------------------------------ */}}
{{- define "switchboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "switchboard.fullname" -}}
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

{{/* <fullname>-<component>, e.g. switchboard-ingest. Call with (list $ "ingest"). */}}
{{- define "switchboard.componentName" -}}
{{- $ctx := index . 0 }}
{{- printf "%s-%s" (include "switchboard.fullname" $ctx | trunc 50 | trimSuffix "-") (index . 1) }}
{{- end }}

{{- define "switchboard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "switchboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: switchboard
{{- end }}

{{/* Selector labels of one component. Call with (list $ "ingest"). */}}
{{- define "switchboard.selectorLabels" -}}
{{- $ctx := index . 0 }}
app.kubernetes.io/name: {{ include "switchboard.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "switchboard.componentLabels" -}}
{{ include "switchboard.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "switchboard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "switchboard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "switchboard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret every secretKeyRef points at: existingSecret, or the chart's own. */}}
{{- define "switchboard.secretName" -}}
{{- default (include "switchboard.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "switchboard.configMapName" -}}
{{- printf "%s-config" (include "switchboard.fullname" .) }}
{{- end }}

{{- define "switchboard.saslEnabled" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}true{{ end }}
{{- end }}

{{/* TOML ------------------------------------------------------------------------------------- */}}
{{/* key = value lines of a map of scalars and lists (JSON scalars and arrays are valid TOML). */}}
{{- define "switchboard.tomlKeys" -}}
{{- range $key, $value := . }}
{{ $key }} = {{ toJson $value }}
{{- end }}
{{- end }}

{{/* Keys every processor-side service shares. Call with (list $ .Values.<component>). */}}
{{- define "switchboard.commonToml" -}}
{{- $ctx := index . 0 }}
{{- $c := index . 1 -}}
create_topics = {{ not $ctx.Values.topics.create }}
topic_partitions = {{ int $ctx.Values.topics.partitions }}
topic_replication_factor = {{ int $ctx.Values.topics.replicationFactor }}
drain_timeout = {{ int $c.drainTimeoutSeconds }}
{{- end }}

{{/* Pods ------------------------------------------------------------------------------------- */}}
{{/* Checksums that roll the pods when their configuration changes. */}}
{{- define "switchboard.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if not .Values.secrets.existingSecret }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The init container that assembles SWITCHBOARD_CONFIG: the service's TOML from the ConfigMap, the
generic sources from the Secret (ingest), then the [kafka] table from the ConfigMap followed by the
SASL credentials from the Secret. The config loader reads [kafka] from the file only (env vars
override top-level keys), so the credentials are written into an in-memory emptyDir, never into a
ConfigMap. Call with (list $ "ingest").
*/}}
{{- define "switchboard.configInit" -}}
{{- $ctx := index . 0 }}
{{- $component := index . 1 }}
- name: config
  image: {{ include "switchboard.image" $ctx }}
  imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
  command:
    - /bin/sh
    - -ec
    - |
      escape() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g'; }
      {
        cat /etc/switchboard/config/{{ $component }}.toml
        {{- if eq $component "ingest" }}
        if [ -f /etc/switchboard/secret/generic-sources.toml ]; then cat /etc/switchboard/secret/generic-sources.toml; fi
        {{- end }}
        cat /etc/switchboard/config/kafka.toml
        if [ -n "${KAFKA_SASL_USERNAME:-}" ]; then
          printf '"sasl.username" = "%s"\n"sasl.password" = "%s"\n' "$(escape "$KAFKA_SASL_USERNAME")" "$(escape "${KAFKA_SASL_PASSWORD:-}")"
        fi
      } > /run/switchboard/config.toml
  {{- if include "switchboard.saslEnabled" $ctx }}
  env:
    - name: KAFKA_SASL_USERNAME
      valueFrom:
        secretKeyRef:
          name: {{ include "switchboard.secretName" $ctx }}
          key: kafka-sasl-username
    - name: KAFKA_SASL_PASSWORD
      valueFrom:
        secretKeyRef:
          name: {{ include "switchboard.secretName" $ctx }}
          key: kafka-sasl-password
  {{- end }}
  securityContext:
    {{- toYaml $ctx.Values.securityContext | nindent 4 }}
  resources:
    requests: {cpu: 10m, memory: 16Mi}
    limits: {memory: 32Mi}
  volumeMounts:
    - name: config
      mountPath: /etc/switchboard/config
      readOnly: true
    {{- if eq $component "ingest" }}
    - name: generic-sources
      mountPath: /etc/switchboard/secret
      readOnly: true
    {{- end }}
    - name: run
      mountPath: /run/switchboard
{{- end }}

{{/* Env vars every switchboard container has. Call with (list $ "ingest"). */}}
{{- define "switchboard.commonEnv" -}}
{{- $ctx := index . 0 }}
- name: SWITCHBOARD_CONFIG
  value: /run/switchboard/config.toml
- name: SWITCHBOARD_LOG
  value: {{ $ctx.Values.logLevel | quote }}
{{- if eq $ctx.Values.logFormat "json" }}
- name: SWITCHBOARD_LOG_FORMAT
  value: json
{{- end }}
- name: SWITCHBOARD_KAFKA_BOOTSTRAP
  value: {{ $ctx.Values.kafka.bootstrap | quote }}
- name: SWITCHBOARD_SCHEMA_REGISTRY_URL
{{- if $ctx.Values.schemaRegistry.urlFromSecret }}
  valueFrom:
    secretKeyRef:
      name: {{ include "switchboard.secretName" $ctx }}
      key: schema-registry-url
{{- else }}
  value: {{ $ctx.Values.schemaRegistry.url | quote }}
{{- end }}
{{- if $ctx.Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $ctx.Values.tracing.otlpEndpoint | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "switchboard-%s" (index . 1) | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $ctx.Values.tracing.sampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $ctx.Values.tracing.samplerArg | quote }}
{{- end }}
{{- with $ctx.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volumes every switchboard pod has. Call with (list $ "ingest"). */}}
{{- define "switchboard.volumes" -}}
{{- $ctx := index . 0 }}
{{- $component := index . 1 }}
- name: config
  configMap:
    name: {{ include "switchboard.configMapName" $ctx }}
    items:
      - key: {{ $component }}.toml
        path: {{ $component }}.toml
      - key: kafka.toml
        path: kafka.toml
{{- if eq $component "ingest" }}
- name: generic-sources
  secret:
    secretName: {{ include "switchboard.secretName" $ctx }}
    optional: true
    items:
      - key: generic-sources.toml
        path: generic-sources.toml
{{- end }}
- name: run
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if $ctx.Values.kafka.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ $ctx.Values.kafka.caSecret }}
{{- end }}
{{- with $ctx.Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "switchboard.volumeMounts" -}}
- name: run
  mountPath: /run/switchboard
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.caSecret }}
- name: kafka-ca
  mountPath: /etc/switchboard/kafka-ca
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Probes on the named port "http". */}}
{{- define "switchboard.probes" -}}
{{ include "switchboard.probesOn" "http" }}
{{- end }}

{{/* Probes on the named port given as the argument. */}}
{{- define "switchboard.probesOn" -}}
startupProbe:
  httpGet: {path: /healthz, port: {{ . }}}
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet: {path: /healthz, port: {{ . }}}
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: {{ . }}}
  periodSeconds: 5
  timeoutSeconds: 3
  failureThreshold: 2
{{- end }}

{{/* Scheduling and pod-level settings shared by every pod. */}}
{{- define "switchboard.podCommon" -}}
serviceAccountName: {{ include "switchboard.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Fails rendering when a component's grace period does not outlast its drain. */}}
{{- define "switchboard.checkGrace" -}}
{{- $c := index . 1 }}
{{- if le (int $c.terminationGracePeriodSeconds) (int $c.drainTimeoutSeconds) }}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d) must be larger than %s.drainTimeoutSeconds (%d)" (index . 0) (int $c.terminationGracePeriodSeconds) (index . 0) (int $c.drainTimeoutSeconds)) }}
{{- end }}
{{- end }}

{{/* The env var carrying an action secret: ACTION_<SECRET KEY>, upper-cased, - and . as _. */}}
{{- define "switchboard.actionEnv" -}}
{{- printf "ACTION_%s" (index . 1 | upper | replace "-" "_" | replace "." "_") }}
{{- end }}

{{/* Milliseconds of a duration as the config loader reads it: 5, "250ms", "5s", "2m", "1h", "7d". */}}
{{- define "switchboard.durationMs" -}}
{{- $s := toString . | trim }}
{{- $n := regexFind "^[0-9]+" $s }}
{{- if not $n }}{{ fail (printf "%q is not a duration (use 250ms, 5s, 2m, 1h or 7d)" $s) }}{{ end }}
{{- $unit := trimPrefix $n $s | trim }}
{{- $factor := get (dict "ms" 1 "" 1000 "s" 1000 "m" 60000 "h" 3600000 "d" 86400000) $unit }}
{{- if not $factor }}{{ fail (printf "%q is not a duration (use 250ms, 5s, 2m, 1h or 7d)" $s) }}{{ end }}
{{- mul (atoi $n) $factor }}
{{- end }}

{{/*
retention.ms of the dedup changelog: the longest dedup window the processor applies, dedupWindow
or a per-source window (dedupWindows, else the processor's default for that source: keep these in
step with processor/src/config.rs), so a store rebuilt from the changelog covers every window.
*/}}
{{- define "switchboard.dedupRetentionMs" -}}
{{- $p := .Values.processor }}
{{- $defaults := dict "twilio" "1d" "stripe" "4d" "calendly" "2d" "generic" "7d" }}
{{- $ms := include "switchboard.durationMs" $p.dedupWindow | atoi }}
{{- range $source, $default := $defaults }}
{{- $window := default $default (get $p.dedupWindows $source) }}
{{- $ms = max $ms (include "switchboard.durationMs" $window | atoi) }}
{{- end }}
{{- $ms }}
{{- end }}

{{/* switchboard.retry.<delay>, named as the actions service names it (schemas/src/topics.rs, retry_topic). */}}
{{- define "switchboard.retryTopic" -}}
{{- $ms := include "switchboard.durationMs" . | atoi }}
{{- if eq (mod $ms 3600000) 0 }}switchboard.retry.{{ div $ms 3600000 }}h
{{- else if eq (mod $ms 60000) 0 }}switchboard.retry.{{ div $ms 60000 }}m
{{- else if eq (mod $ms 1000) 0 }}switchboard.retry.{{ div $ms 1000 }}s
{{- else }}switchboard.retry.{{ $ms }}ms
{{- end }}
{{- end }}

{{/*
The topics the Job creates, one per line: <name> <partitions> <replication> [config ...], as
schemas/src/topics.rs (ALL_TOPICS, COMPACTED_TOPICS) and the services' create_topics define them.
*/}}
{{- define "switchboard.topicList" -}}
{{- $t := .Values.topics }}
{{- $base := printf "%d %d min.insync.replicas=%d" (int $t.partitions) (int $t.replicationFactor) (int $t.minInsyncReplicas) }}
{{- $retained := printf "%s retention.ms=%d" $base (int64 $t.retentionMs) }}
{{- range list "switchboard.raw.twilio" "switchboard.raw.stripe" "switchboard.raw.calendly" "switchboard.raw.generic" "switchboard.calls" "switchboard.messages" "switchboard.billing" "switchboard.bookings" "switchboard.generic" "switchboard.dlq" "switchboard.actions.redrive" "switchboard.actions.attempts" }}
{{ . }} {{ $retained }}
{{- end }}
switchboard.call-state {{ $base }} cleanup.policy=compact
switchboard.processor.dedup {{ $base }} cleanup.policy=compact,delete retention.ms={{ include "switchboard.dedupRetentionMs" . }}
switchboard.dlq.redriven {{ $base }} cleanup.policy=compact
{{- if .Values.actions.enabled }}
{{- range .Values.actions.retryDelays }}
{{- $ms := include "switchboard.durationMs" . | atoi }}
{{- /* As long as the DLQ (days): waiting retries must outlive an outage of the actions service. */}}
{{ include "switchboard.retryTopic" . }} {{ $base }} retention.ms={{ max (int64 $t.retentionMs) (mul $ms 2) }}
{{- end }}
{{- end }}
{{- end }}
