{{/* Names. Kubernetes names are capped at 63 characters; so are these. */}}
{{- define "asya-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "asya-operator.fullname" -}}
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

{{- define "asya-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "asya-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "asya-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "asya-operator.labels" -}}
helm.sh/chart: {{ include "asya-operator.chart" . }}
{{ include "asya-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: asya
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "asya-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "asya-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "asya-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The sidecar ships in the operator's image unless another one is named. */}}
{{- define "asya-operator.sidecarImage" -}}
{{- default (include "asya-operator.image" .) .Values.sidecar.image -}}
{{- end -}}

{{- define "asya-operator.configPath" -}}
/etc/asya/operator.yaml
{{- end -}}

{{/*
The operator's configuration file (docs/operator.md). operatorNamespace is always the
release's namespace: that is where the transport Secrets are readable (templates/rbac.yaml)
and where the pod's own credentials come from.
*/}}
{{- define "asya-operator.config" -}}
{{- $config := dict "transports" .Values.transports -}}
{{- with .Values.defaultTransport -}}
{{- $_ := set $config "defaultTransport" . -}}
{{- end -}}
{{- $sidecar := dict "image" (include "asya-operator.sidecarImage" .) "imagePullPolicy" .Values.sidecar.imagePullPolicy "resources" .Values.sidecar.resources -}}
{{- $_ := set $config "sidecar" $sidecar -}}
{{- $_ := set $config "namespaces" .Values.watchNamespaces -}}
{{- with .Values.crewNamespace -}}
{{- $_ := set $config "crewNamespace" . -}}
{{- end -}}
{{- $_ := set $config "operatorNamespace" .Release.Namespace -}}
{{- $_ := set $config "queueRefreshSeconds" .Values.queueRefreshSeconds -}}
{{- with .Values.gateway.url -}}
{{- $_ := set $config "gateway" (dict "url" .) -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/*
Names of the Secrets the operator reads through the Kubernetes API, one per line. Only a
rabbitmq transport's secretRef is read that way (its `url` key holds the password); sqs and
pubsub Secrets reach the pod as environment or a mounted file, which needs no RBAC.
*/}}
{{- define "asya-operator.readSecrets" -}}
{{- $names := list -}}
{{- range $name, $transport := .Values.transports -}}
{{- if and (eq $transport.type "rabbitmq") $transport.credentials -}}
{{- with $transport.credentials.secretRef -}}
{{- $names = append $names .name -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $names | uniq | sortAlpha | join "\n" -}}
{{- end -}}

{{/*
The one Secret of a transport type ("sqs" or "pubsub") whose keys become the pod's own cloud
credentials, as JSON ({} when none). A process has a single AWS and a single Google identity,
so two different Secrets for the same cloud cannot both be honoured: that fails the install.
*/}}
{{- define "asya-operator.cloudSecret" -}}
{{- $type := .type -}}
{{- $found := dict -}}
{{- range $name, $transport := .root.Values.transports -}}
{{- if and (eq $transport.type $type) $transport.credentials -}}
{{- with $transport.credentials.secretRef -}}
{{- if and $found.name (ne $found.name .name) -}}
{{- fail (printf "transports.%s.credentials.secretRef.name: the operator pod has one %s identity, but the %s transports name different Secrets (%s, %s); use one Secret, or pod identity" $name $type $type $found.name .name) -}}
{{- end -}}
{{- $found = dict "name" .name "keys" (default dict .keys) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $found -}}
{{- end -}}

{{/* Checks the schema cannot express; each message names the value to fix. */}}
{{- define "asya-operator.validate" -}}
{{- if and .Values.defaultTransport (not (hasKey .Values.transports .Values.defaultTransport)) -}}
{{- fail (printf "defaultTransport: %q is not one of transports (%s)" .Values.defaultTransport (keys .Values.transports | sortAlpha | join ", " | default "none configured")) -}}
{{- end -}}
{{- if and .Values.watchNamespaces .Values.crewNamespace (not (has .Values.crewNamespace .Values.watchNamespaces)) -}}
{{- fail (printf "crewNamespace: %q is not in watchNamespaces (%s), so x-sink and x-sump would never be reconciled; add it" .Values.crewNamespace (join ", " .Values.watchNamespaces)) -}}
{{- end -}}
{{- end -}}

{{/*
What the operator does through the Kubernetes API, and nothing more (docs/operator.md,
"Kubernetes API access"). Events: kopf posts core v1 Events, never events.k8s.io.
*/}}
{{- define "asya-operator.rules" -}}
- apiGroups: [asya.sh]
  resources: [asyncactors]
  verbs: [get, list, watch, patch]
- apiGroups: [asya.sh]
  resources: [asyncactors/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, create, patch]
- apiGroups: [keda.sh]
  resources: [scaledobjects, triggerauthentications]
  verbs: [get, create, patch, delete]
{{- end -}}
