{{/* Names. Kubernetes names are capped at 63 characters; so are these. */}}
{{- define "asya-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "asya-gateway.fullname" -}}
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

{{/* The internal Service: the full name, shortened so that "-internal" still fits. */}}
{{- define "asya-gateway.internalName" -}}
{{- printf "%s-internal" (include "asya-gateway.fullname" . | trunc 54 | trimSuffix "-") -}}
{{- end -}}

{{- define "asya-gateway.flowsName" -}}
{{- printf "%s-flows" (include "asya-gateway.fullname" . | trunc 57 | trimSuffix "-") -}}
{{- end -}}

{{- define "asya-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "asya-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "asya-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "asya-gateway.labels" -}}
helm.sh/chart: {{ include "asya-gateway.chart" . }}
{{ include "asya-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: gateway
app.kubernetes.io/part-of: asya
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Empty when the pods keep the namespace's default account. */}}
{{- define "asya-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "asya-gateway.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "asya-gateway.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
Ports of the gateway container, fixed: the command line, the probes, both Services and the
NetworkPolicy name them, and nothing gains from moving them.
*/}}
{{- define "asya-gateway.publicPort" -}}8080{{- end -}}
{{- define "asya-gateway.internalPort" -}}8081{{- end -}}

{{/* Where the SQLite file lives (the data volume) and the default file on it. */}}
{{- define "asya-gateway.dataDir" -}}/var/lib/asya-gateway{{- end -}}
{{- define "asya-gateway.sqliteUrl" -}}
{{- default (printf "sqlite:///%s/gateway.db" (include "asya-gateway.dataDir" .)) .Values.store.url -}}
{{- end -}}

{{/* "true" when the store is the SQLite file of one pod (no PostgreSQL Secret). */}}
{{- define "asya-gateway.sqlite" -}}
{{- if not .Values.store.existingSecret -}}true{{- end -}}
{{- end -}}

{{- define "asya-gateway.flowsDir" -}}/etc/asya-gateway/flows{{- end -}}
{{- define "asya-gateway.authDir" -}}/etc/asya-gateway/auth{{- end -}}

{{/* The namespace of the actors tasks go to: the queue names' middle part. */}}
{{- define "asya-gateway.actorNamespace" -}}
{{- default .Release.Namespace .Values.actorNamespace -}}
{{- end -}}

{{/*
The environment a transport becomes, as a YAML list of EnvVars: the variables the sidecar
reads, with the operator's defaults (asya_operator/transport_env.py, which the tests compare
this with). Credentials stay references to a Secret of this namespace.
*/}}
{{- define "asya-gateway.transportEnv" -}}
{{- $t := .Values.transport -}}
{{- $secret := dig "credentials" "secretRef" dict $t -}}
- name: ASYA_TRANSPORT
  value: {{ $t.type | quote }}
- name: ASYA_NAMESPACE
  value: {{ include "asya-gateway.actorNamespace" . | quote }}
{{- if eq $t.type "rabbitmq" }}
{{- if $secret }}
- name: ASYA_RABBITMQ_URL
  valueFrom:
    secretKeyRef:
      name: {{ $secret.name }}
      key: {{ dig "keys" "url" "url" $secret }}
{{- else }}
- name: ASYA_RABBITMQ_URL
  value: {{ $t.url | quote }}
{{- end }}
- name: ASYA_RABBITMQ_QUEUE_TYPE
  value: {{ default "quorum" $t.queueType | quote }}
{{- else if eq $t.type "pubsub" }}
- name: ASYA_PUBSUB_PROJECT
  value: {{ $t.project | quote }}
{{- with $t.emulatorHost }}
- name: PUBSUB_EMULATOR_HOST
  value: {{ . | quote }}
{{- end }}
- name: ASYA_PUBSUB_ACK_DEADLINE
  value: {{ default 60 $t.ackDeadline | toString | quote }}
- name: ASYA_PUBSUB_MAX_DELIVERY_ATTEMPTS
  value: {{ dig "dlq" "maxDeliveries" 10 $t | toString | quote }}
{{- if $secret }}
- name: GOOGLE_APPLICATION_CREDENTIALS
  value: {{ include "asya-gateway.gcpDir" . }}/credentials.json
{{- end }}
{{- else if eq $t.type "sqs" }}
- name: AWS_REGION
  value: {{ $t.region | quote }}
{{- with $t.endpoint }}
- name: ASYA_SQS_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: ASYA_SQS_VISIBILITY_TIMEOUT
  value: {{ default 30 $t.visibilityTimeout | toString | quote }}
- name: ASYA_SQS_MAX_RECEIVE_COUNT
  value: {{ dig "dlq" "maxDeliveries" 10 $t | toString | quote }}
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
{{- end -}}

{{/* Google's libraries read a key file: a pubsub Secret is mounted here. */}}
{{- define "asya-gateway.gcpDir" -}}/var/run/secrets/asya/gcp{{- end -}}

{{/* Checks the schema cannot express; each message names the value to fix. */}}
{{- define "asya-gateway.validate" -}}
{{- if not .Values.transport.type -}}
{{- fail "transport: the broker the gateway publishes to is not set; copy the actors' entry of the operator chart's transports, e.g. transport: {type: rabbitmq, credentials: {secretRef: {name: rabbitmq-asya}}}" -}}
{{- end -}}
{{- if and (not .Values.auth.existingSecret) (not .Values.auth.insecure) -}}
{{- fail "auth.existingSecret: the gateway listens on the pod network and refuses to start without API keys; name a Secret holding the keys file (docs/gateway.md, \"Auth and tenants\"), or set auth.insecure: true to let anyone who reaches it submit and read tasks" -}}
{{- end -}}
{{- if and .Values.store.existingSecret .Values.store.url -}}
{{- fail "store: give either existingSecret (PostgreSQL, its URL in a Secret) or url (a SQLite file), not both" -}}
{{- end -}}
{{- if and (include "asya-gateway.sqlite" .) (gt (int .Values.replicaCount) 1) -}}
{{- fail (printf "replicaCount: %d replicas need the PostgreSQL store, which they share: set store.existingSecret (a Secret whose key %q holds postgresql://...); a SQLite file belongs to one pod" (int .Values.replicaCount) .Values.store.existingSecretKey) -}}
{{- end -}}
{{- if and .Values.store.persistence.enabled (not (include "asya-gateway.sqlite" .)) -}}
{{- fail "store.persistence.enabled: the data volume holds the SQLite file only; with store.existingSecret (PostgreSQL) turn it off" -}}
{{- end -}}
{{- $seen := dict -}}
{{- range $i, $flow := .Values.flows -}}
{{- if hasKey $seen $flow.name -}}
{{- fail (printf "flows[%d].name: %q is already the name of flows[%d]; flow names must be unique" $i $flow.name (get $seen $flow.name)) -}}
{{- end -}}
{{- $_ := set $seen $flow.name $i -}}
{{- end -}}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) -}}
{{- fail "ingress.hosts: an enabled Ingress needs at least one host with its paths" -}}
{{- end -}}
{{- end -}}
