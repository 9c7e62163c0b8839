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
One crew AsyncActor. Arguments: root (the chart's context), name (x-sink, x-sump), handler,
storeVariable and store (its URL), and actor (the sink or sump values).
*/}}
{{- define "asya-crew.actor" -}}
{{- $root := .root -}}
{{- $values := $root.Values -}}
{{- $actor := .actor -}}
{{- $account := include "asya-crew.serviceAccountName" $root -}}
{{- $secret := dig "credentials" "secretRef" dict $values.s3 -}}
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
  env:
    - name: {{ .storeVariable }}
      value: {{ .store | quote }}
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
    {{- with $values.gateway.url }}
    - name: ASYA_GATEWAY_URL
      value: {{ . | quote }}
    {{- end }}
    {{- with $values.env }}
    {{- toYaml . | nindent 4 }}
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

{{/* Checks the schema cannot express; each message names the value to fix. */}}
{{- define "asya-crew.validate" -}}
{{- if and (hasKey .Values.s3.credentials "podIdentity") (not (include "asya-crew.serviceAccountName" .)) -}}
{{- fail "s3.credentials.podIdentity: pod identity comes from a service account: set serviceAccount.create (with awsRoleArn) or serviceAccount.name" -}}
{{- end -}}
{{- range $key := list "sink" "sump" -}}
{{- $scaling := (index $.Values $key).scaling -}}
{{- if gt (int $scaling.minReplicas) (int $scaling.maxReplicas) -}}
{{- fail (printf "%s.scaling.minReplicas (%d) must not be greater than %s.scaling.maxReplicas (%d)" $key (int $scaling.minReplicas) $key (int $scaling.maxReplicas)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
