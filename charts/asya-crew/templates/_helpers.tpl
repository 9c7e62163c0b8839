{{/* Names. Kubernetes names are capped at 63 characters; so are these. */}}
{{- define "asya-crew.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "asya-crew.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "asya-crew.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "asya-crew.labels" -}}
helm.sh/chart: {{ include "asya-crew.chart" . }}
app.kubernetes.io/name: {{ include "asya-crew.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: crew
app.kubernetes.io/part-of: asya
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Empty when the pods keep the namespace's default account. */}}
{{- define "asya-crew.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "asya-crew.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "asya-crew.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
One crew AsyncActor. Arguments: root (the chart's context), name (x-sink, x-sump, x-join,
x-pause), handler, env (its own settings, first in spec.env), s3 (whether it writes to the
S3 stores: x-sink and x-sump), holding (x-join and x-pause: the holding resiliency policy)
and actor (its values: sink, sump, join, pause).
*/}}
{{- define "asya-crew.actor" -}}
{{- $root := .root -}}
{{- $values := $root.Values -}}
{{- $actor := .actor -}}
{{- $account := include "asya-crew.serviceAccountName" $root -}}
{{- $secret := dig "credentials" "secretRef" dict $values.s3 -}}
{{- $s3 := .s3 -}}
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata:
  name: {{ .name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "asya-crew.labels" $root | nindent 4 }}
spec:
  {{- with $values.transport }}
  transport: {{ . }}
  {{- end }}
  image: {{ include "asya-crew.image" $root }}
  handler: {{ .handler }}
  concurrency: {{ $actor.concurrency }}
  {{- $own := .env }}
  {{- if or $own $values.env $values.gateway.url (and $s3 (or $values.s3.endpoint $values.s3.region $secret)) }}
  env:
    {{- with $own }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- if $s3 }}
    {{- with $values.s3.endpoint }}
    - name: ASYA_S3_ENDPOINT
      value: {{ . | quote }}
    {{- end }}
    {{- with $values.s3.region }}
    - name: AWS_REGION
      value: {{ . | quote }}
    {{- end }}
    {{- if $secret }}
    - name: AWS_ACCESS_KEY_ID
      valueFrom:
        secretKeyRef:
          name: {{ $secret.name }}
          key: {{ dig "keys" "accessKeyId" "accessKeyId" $secret }}
    - name: AWS_SECRET_ACCESS_KEY
      valueFrom:
        secretKeyRef:
          name: {{ $secret.name }}
          key: {{ dig "keys" "secretAccessKey" "secretAccessKey" $secret }}
    {{- end }}
    {{- end }}
    {{- with $values.gateway.url }}
    - name: ASYA_GATEWAY_URL
      value: {{ . | quote }}
    {{- end }}
    {{- with $values.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  {{- with $actor.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if not $actor.scaling.enabled }}
  replicas: {{ $actor.replicas }}
  {{- end }}
  scaling:
    {{- toYaml $actor.scaling | nindent 4 }}
  {{- with $values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $account }}
  serviceAccountName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ $values.terminationGracePeriodSeconds }}
  queue:
    deletionPolicy: {{ $values.queueDeletionPolicy }}
  {{- if .holding }}
  resiliency:
    {{- include "asya-crew.holdingResiliency" . | nindent 4 }}
  {{- end }}
  {{- if or $values.podAnnotations $values.affinity $values.image.pullPolicy }}
  {{- /* What the flat fields cannot say goes through the pod template. */}}
  template:
    {{- with $values.podAnnotations }}
    metadata:
      annotations:
        {{- toYaml . | nindent 8 }}
    {{- end }}
    spec:
      {{- with $values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $values.image.pullPolicy }}
      containers:
        - name: asya-runtime
          imagePullPolicy: {{ . }}
      {{- end }}
  {{- end }}
{{- end -}}

{{/*
The policy of x-join and x-pause, as `asya dev` gives them (asya_cli/dev_plan.py,
HOLDING_RESILIENCY; a test keeps the two equal). What fails for want of the join store or
the gateway is retried for about half an hour, both come back; what no retry can fix (bad
join or pause headers, an envelope that is no part or no task: ValueError, LookupError)
fails at once.
*/}}
{{- define "asya-crew.holdingResiliency" -}}
policies:
  default:
    maxAttempts: 30
    backoff: exponential
    initialDelay: 1s
    maxInterval: 1m
  refused:
    maxAttempts: 1
rules:
  - errors: [ValueError, LookupError]
    policy: refused
{{- end -}}

{{/* x-join's store URL: a key of a Secret (join.storeSecretRef), which wins, or the literal
stores.join (default: a SQLite file for one pod). */}}
{{- define "asya-crew.joinStoreEnv" -}}
{{- $ref := .Values.join.storeSecretRef -}}
- name: ASYA_JOIN_STORE
{{- if $ref }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.name }}
      key: {{ default "url" $ref.key }}
{{- else }}
  value: {{ .Values.stores.join | quote }}
{{- end }}
{{- with .Values.join.sweepInterval }}
- name: ASYA_JOIN_SWEEP_INTERVAL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.join.lease }}
- name: ASYA_JOIN_LEASE
  value: {{ . | quote }}
{{- end }}
{{- with .Values.join.keepDone }}
- name: ASYA_JOIN_KEEP_DONE
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Checks the schema cannot express; each message names the value to fix. */}}
{{- define "asya-crew.validate" -}}
{{- if and (hasKey .Values.s3.credentials "podIdentity") (not (include "asya-crew.serviceAccountName" .)) -}}
{{- fail "s3.credentials.podIdentity: pod identity comes from a service account: set serviceAccount.create (with awsRoleArn) or serviceAccount.name" -}}
{{- end -}}
{{- range $key := list "sink" "sump" "join" "pause" -}}
{{- $scaling := (index $.Values $key).scaling -}}
{{- if gt (int $scaling.minReplicas) (int $scaling.maxReplicas) -}}
{{- fail (printf "%s.scaling.minReplicas (%d) must not be greater than %s.scaling.maxReplicas (%d)" $key (int $scaling.minReplicas) $key (int $scaling.maxReplicas)) -}}
{{- end -}}
{{- end -}}
{{- $join := .Values.join -}}
{{- if $join.enabled -}}
{{- if not (or .Values.stores.join $join.storeSecretRef) -}}
{{- fail "join.enabled is true but x-join has no store: set join.storeSecretRef (a Secret whose key holds postgresql://user:password@host/db, recommended) or stores.join (postgresql://... without a password, or sqlite:///tmp/asya/join.db for a single replica, lost with the pod), or set join.enabled: false" -}}
{{- end -}}
{{- $pods := ternary $join.scaling.maxReplicas $join.replicas $join.scaling.enabled -}}
{{- if and (not $join.storeSecretRef) (hasPrefix "sqlite:" .Values.stores.join) (gt (int $pods) 1) -}}
{{- fail (printf "stores.join: a SQLite store is a file inside one pod, and x-join may run %d: every replica would hold its own part of each join. Use postgresql://..., or run one pod (join.scaling.maxReplicas: 1, or join.scaling.enabled: false with join.replicas: 1)" (int $pods)) -}}
{{- end -}}
{{- if lt (int (ternary $join.scaling.minReplicas $join.replicas $join.scaling.enabled)) 1 -}}
{{- fail "join: x-join needs a pod up at all times (join.scaling.minReplicas, or join.replicas with scaling off, at least 1): its sweeper ends the joins whose parts never come, and no message wakes a scaled-to-zero x-join for that" -}}
{{- end -}}
{{- end -}}
{{- end -}}
