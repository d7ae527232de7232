{{/* Chart name, at most 63 characters. */}}
{{- define "artifact-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of the release's namespaced objects, at most 63 characters: the release name alone when
it already contains the chart name.
*/}}
{{- define "artifact-operator.fullname" -}}
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

{{/*
Name of the release's cluster-scoped objects. It always contains the release name, also with
fullnameOverride, so that two releases never write the same ClusterRole or webhook
configuration.
*/}}
{{- define "artifact-operator.clusterName" -}}
{{- $fullname := include "artifact-operator.fullname" . }}
{{- if contains .Release.Name $fullname }}
{{- $fullname }}
{{- else }}
{{- printf "%s-%s" .Release.Name $fullname | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "artifact-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object of the release. */}}
{{- define "artifact-operator.labels" -}}
helm.sh/chart: {{ include "artifact-operator.chart" . }}
{{ include "artifact-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: artifact-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the operator pods; a Deployment's selector cannot change later. */}}
{{- define "artifact-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "artifact-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "artifact-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "artifact-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Operator image: repository with the digest, else with the tag or the appVersion. */}}
{{- define "artifact-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "artifact-operator.loaderImage" -}}
{{- default (include "artifact-operator.image" .) .Values.loader.image }}
{{- end }}

{{- define "artifact-operator.webhookServiceName" -}}
{{- printf "%s-webhook" (include "artifact-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "artifact-operator.gatewayServiceName" -}}
{{- printf "%s-gateway" (include "artifact-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "artifact-operator.metricsServiceName" -}}
{{- printf "%s-metrics" (include "artifact-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "artifact-operator.gatewayURL" -}}
{{- if .Values.gateway.url }}
{{- .Values.gateway.url }}
{{- else }}
{{- printf "http://%s.%s.svc:%d" (include "artifact-operator.gatewayServiceName" .) .Release.Namespace (int .Values.gateway.port) }}
{{- end }}
{{- end }}

{{- define "artifact-operator.signingKeySecretName" -}}
{{- default (printf "%s-signing-keys" (include "artifact-operator.fullname" .)) .Values.signingKeys.secretName }}
{{- end }}

{{- define "artifact-operator.webhookTLSSecretName" -}}
{{- default (printf "%s-webhook-tls" (include "artifact-operator.fullname" .)) .Values.webhook.tlsSecretName }}
{{- end }}

{{/* Name of the MutatingWebhookConfiguration, and of the cert-manager Certificate. */}}
{{- define "artifact-operator.webhookConfigurationName" -}}
{{- include "artifact-operator.clusterName" . }}
{{- end }}

{{- define "artifact-operator.certificateName" -}}
{{- printf "%s-webhook" (include "artifact-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
