{{/* Chart name, truncated to the 63 characters a label allows. */}}
{{- define "dsdeploy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified prefix of every resource name. */}}
{{- define "dsdeploy.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's resources: <fullname>-<component>. Call with (list $ "engine"). */}}
{{- define "dsdeploy.componentName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "dsdeploy.fullname" $root) (index . 1) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every resource. */}}
{{- define "dsdeploy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "dsdeploy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dsdeploy
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of one component (list $ "router"). */}}
{{- define "dsdeploy.componentLabels" -}}
{{ include "dsdeploy.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Selector labels of one component (list $ "router"); never change after install. */}}
{{- define "dsdeploy.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "dsdeploy.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* Metadata lines shared by every namespaced object: name, namespace, labels. (list $ "router" "name") */}}
{{- define "dsdeploy.metadata" -}}
{{- $root := index . 0 -}}
name: {{ index . 2 }}
namespace: {{ $root.Release.Namespace }}
labels:
  {{- include "dsdeploy.componentLabels" (list $root (index . 1)) | nindent 2 }}
{{- end -}}

{{/* Image reference from {repository, tag, digest}; the digest wins, an empty tag means appVersion. */}}
{{- define "dsdeploy.image" -}}
{{- $img := index . 0 -}}
{{- $root := index . 1 -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* The engine image object of the chosen engine type. */}}
{{- define "dsdeploy.engineImageValues" -}}
{{- if eq .Values.engine.type "vllm" -}}
{{- toYaml .Values.engine.vllm.image -}}
{{- else -}}
{{- toYaml .Values.engine.server.image -}}
{{- end -}}
{{- end -}}

{{- define "dsdeploy.engineImage" -}}
{{- include "dsdeploy.image" (list (include "dsdeploy.engineImageValues" . | fromYaml) .) -}}
{{- end -}}

{{/* The download Job's image: its own when set, else the engine image. */}}
{{- define "dsdeploy.downloadImageValues" -}}
{{- if .Values.modelCache.download.image.repository -}}
{{- toYaml .Values.modelCache.download.image -}}
{{- else -}}
{{- include "dsdeploy.engineImageValues" . -}}
{{- end -}}
{{- end -}}

{{/* Folder of the weights inside the cache volume. */}}
{{- define "dsdeploy.modelDir" -}}
{{- printf "%s/%s" .Values.modelCache.mountPath (default .Values.model.servedModelName .Values.model.localDir) -}}
{{- end -}}

{{/* Name of the PVC the pods mount. */}}
{{- define "dsdeploy.modelClaim" -}}
{{- default (include "dsdeploy.componentName" (list . "model-cache")) .Values.modelCache.existingClaim -}}
{{- end -}}

{{/* Whether the download Job runs: a source to fetch from and not air-gapped. */}}
{{- define "dsdeploy.downloadEnabled" -}}
{{- if and (not .Values.modelCache.airgapped) (ne .Values.model.source "none") -}}true{{- end -}}
{{- end -}}

{{/* Size of /dev/shm: explicit, or 4Gi per tensor-parallel rank (at least 2Gi). */}}
{{- define "dsdeploy.shmSize" -}}
{{- if .Values.engine.shm.sizeLimit -}}
{{- .Values.engine.shm.sizeLimit -}}
{{- else -}}
{{- printf "%dGi" (max 2 (mul 4 (int .Values.engine.tensorParallelSize))) -}}
{{- end -}}
{{- end -}}

{{/* "true" when ServiceMonitors render: forced on, or auto and the API exists. */}}
{{- define "dsdeploy.serviceMonitorEnabled" -}}
{{- $v := toString .Values.monitoring.serviceMonitor.enabled -}}
{{- if or (eq $v "true") (and (eq $v "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor")) -}}true{{- end -}}
{{- end -}}

{{- define "dsdeploy.prometheusRuleEnabled" -}}
{{- $v := toString .Values.monitoring.prometheusRule.enabled -}}
{{- if or (eq $v "true") (and (eq $v "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PrometheusRule")) -}}true{{- end -}}
{{- end -}}

{{/* Which engine autoscaler renders: "keda", "hpa" or nothing. */}}
{{- define "dsdeploy.engineAutoscaler" -}}
{{- $a := .Values.engine.autoscaling -}}
{{- if $a.enabled -}}
{{- if eq $a.provider "keda" -}}keda
{{- else if eq $a.provider "hpa" -}}hpa
{{- else if .Capabilities.APIVersions.Has "keda.sh/v1alpha1" -}}keda
{{- else -}}hpa
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Restricted pod-level fields shared by every pod. */}}
{{- define "dsdeploy.podSecurity" -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* checkov skips that apply to every workload, each with its reason. */}}
{{- define "dsdeploy.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_43=Images are pinned by tag; set image.digest in values to pin by digest (air-gapped registries re-tag images, so digests are opt-in)
checkov.io/skip2: CKV_K8S_15=IfNotPresent is deliberate; images are pinned and air-gapped nodes must start from pre-loaded images without reaching a registry
{{- end -}}

{{/* Service URL of the engine inside the cluster. */}}
{{- define "dsdeploy.engineURL" -}}
{{- printf "http://%s.%s.svc:%d" (include "dsdeploy.componentName" (list . "engine")) .Release.Namespace (int .Values.engine.service.port) -}}
{{- end -}}

{{- define "dsdeploy.routerURL" -}}
{{- printf "http://%s.%s.svc:%d" (include "dsdeploy.componentName" (list . "router")) .Release.Namespace (int .Values.router.service.port) -}}
{{- end -}}
