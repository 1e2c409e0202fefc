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

{{/* The engine image object of the chosen engine type: vLLM's GPU image, vLLM's CPU image (no GPUs; its tag
defaults to the GPU image's, one vLLM release), or the project's server, whose image has a CPU and a CUDA
variant (tags APPVERSION-cpu and APPVERSION-cuda, as the release workflow pushes them): without a tag, the
variant follows engine.gpusPerReplica. */}}
{{- define "dsdeploy.engineImageValues" -}}
{{- if and (eq .Values.engine.type "vllm") (eq (int .Values.engine.gpusPerReplica) 0) -}}
{{- $img := deepCopy .Values.engine.vllm.cpuImage -}}
{{- $_ := set $img "tag" (default .Values.engine.vllm.image.tag $img.tag) -}}
{{- if not (or $img.tag $img.digest) -}}
{{- fail "engine.vllm.cpuImage: set a tag or a digest (engine.vllm.image is pinned by digest only, and that digest names the GPU image)" -}}
{{- end -}}
{{- toYaml $img -}}
{{- else if eq .Values.engine.type "vllm" -}}
{{- toYaml .Values.engine.vllm.image -}}
{{- else -}}
{{- $img := deepCopy .Values.engine.server.image -}}
{{- if not $img.tag -}}
{{- $_ := set $img "tag" (printf "%s-%s" .Chart.AppVersion (ternary "cpu" "cuda" (eq (int .Values.engine.gpusPerReplica) 0))) -}}
{{- end -}}
{{- toYaml $img -}}
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

{{/* Whether the weights are downloaded at all: a source to fetch from and not air-gapped. */}}
{{- define "dsdeploy.downloadEnabled" -}}
{{- if and (not .Values.modelCache.airgapped) (ne .Values.model.source "none") -}}true{{- end -}}
{{- end -}}

{{/* Who downloads: "job" (a Job of its own, the only pod with the download's egress and cloud identity) or
nothing (air-gapped / pre-filled). The engine pod never downloads: the process that sees every prompt has no
route out. On a ReadWriteOnce cache the Job runs on the engine's node (job-model-download.yaml). */}}
{{- define "dsdeploy.downloadMode" -}}
{{- if include "dsdeploy.downloadEnabled" . -}}job{{- end -}}
{{- end -}}

{{/* Label of the engine pods naming the weights they wait for; the ReadWriteOnce download Job follows the
engine pods of these weights to their node (never an old pod of other weights on its way out). */}}
{{- define "dsdeploy.weightsLabel" -}}dsdeploy.io/weights{{- end -}}
{{- define "dsdeploy.weightsLabelValue" -}}{{- include "dsdeploy.modelChecksum" . | trunc 16 -}}{{- end -}}

{{/* What the download fetches (source, model, revision or URI, patterns): the download's arguments, and
what the engine's wait checks the completion marker against. */}}
{{- define "dsdeploy.modelSourceArgs" -}}
{{- $m := .Values.model -}}
- --source={{ $m.source }}
{{- if has $m.source (list "s3" "gcs") }}
- --uri={{ required "model.uri is required for source s3/gcs" $m.uri }}
{{- else }}
- --model-id={{ $m.id }}
- --revision={{ $m.revision }}
{{- end }}
{{- range $m.allowPatterns }}
- --allow-pattern={{ . }}
{{- end }}
{{- end -}}

{{/* Identity of the weights in the cache; a change rolls the engine pods (checksum/model). */}}
{{- define "dsdeploy.modelChecksum" -}}
{{- $m := .Values.model -}}
{{- toJson (dict "id" $m.id "revision" $m.revision "source" $m.source "uri" $m.uri "allowPatterns" $m.allowPatterns
  "dir" (include "dsdeploy.modelDir" .) "ggufFile" $m.ggufFile) | sha256sum -}}
{{- end -}}

{{/* The download Job's container. (list $ "container-name") */}}
{{- define "dsdeploy.downloadContainer" -}}
{{- $root := index . 0 -}}
{{- $d := $root.Values.modelCache.download -}}
{{- $m := $root.Values.model -}}
{{- $img := include "dsdeploy.downloadImageValues" $root | fromYaml -}}
- name: {{ index . 1 }}
  image: {{ include "dsdeploy.image" (list $img $root) }}
  imagePullPolicy: {{ $img.pullPolicy }}
  command: ["python3", "/opt/dsdeploy/download_model.py"]
  args:
    - --dest={{ include "dsdeploy.modelDir" $root }}
    {{- include "dsdeploy.modelSourceArgs" $root | nindent 4 }}
    - --attempts={{ $d.attempts }}
    - --max-workers={{ $d.maxWorkers }}
    - --deadline={{ $d.timeoutSeconds }}
  env:
    - {name: HOME, value: /tmp/home}
    - {name: XDG_CACHE_HOME, value: /tmp/cache}
    - {name: HF_HUB_DISABLE_TELEMETRY, value: "1"}
    - {name: HF_HUB_ENABLE_HF_TRANSFER, value: "0"}
    # Hub client caches live on the cache volume, not in the small /tmp emptyDir.
    - {name: HF_HOME, value: {{ printf "%s/.hf-home" $root.Values.modelCache.mountPath | quote }}}
    - {name: HF_XET_CHUNK_CACHE_SIZE_BYTES, value: "0"}
    - {name: MODELSCOPE_CACHE, value: {{ printf "%s/.modelscope-cache" $root.Values.modelCache.mountPath | quote }}}
    {{- with $m.hfEndpoint }}
    - {name: HF_ENDPOINT, value: {{ . | quote }}}
    {{- end }}
    {{- if $m.tokenSecret.name }}
    - {name: DSDEPLOY_TOKEN_FILE, value: /var/run/secrets/dsdeploy/token/{{ $m.tokenSecret.key }}}
    {{- end }}
    {{- with $d.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $m.credentialsSecret.name }}
  envFrom:
    - secretRef:
        name: {{ . }}
  {{- end }}
  resources:
    {{- toYaml $d.resources | nindent 4 }}
  securityContext:
    {{- toYaml $root.Values.containerSecurityContext | nindent 4 }}
  volumeMounts:
    - {name: model-cache, mountPath: {{ $root.Values.modelCache.mountPath }}}
    - {name: download-script, mountPath: /opt/dsdeploy, readOnly: true}
    - {name: tmp, mountPath: /tmp}
    {{- if $m.tokenSecret.name }}
    - {name: token, mountPath: /var/run/secrets/dsdeploy/token, readOnly: true}
    {{- end }}
{{- end -}}

{{/* The hub token volume of the download container. */}}
{{- define "dsdeploy.tokenVolume" -}}
{{- $m := .Values.model -}}
{{- if $m.tokenSecret.name -}}
- name: token
  secret:
    secretName: {{ $m.tokenSecret.name }}
    items:
      - key: {{ $m.tokenSecret.key }}
        path: {{ $m.tokenSecret.key }}
{{- end -}}
{{- end -}}

{{/* Whether the download reaches the cloud's metadata endpoints (workload identity for s3/gcs). */}}
{{- define "dsdeploy.metadataEgress" -}}
{{- $v := toString .Values.networkPolicy.metadataEgress.enabled -}}
{{- $workloadIdentity := and (has .Values.model.source (list "s3" "gcs")) (empty .Values.model.credentialsSecret.name) -}}
{{- if or (eq $v "true") (and (eq $v "auto") $workloadIdentity (has .Values.platform (list "gke" "eks"))) -}}true{{- end -}}
{{- end -}}

{{/* Egress rules of the pod that downloads: DNS, the hub / mirror / object store outside the cluster,
private ranges (VPC endpoints, an in-network mirror or proxy), the metadata endpoints. */}}
{{- define "dsdeploy.downloadEgress" -}}
{{- $np := .Values.networkPolicy -}}
- to:
    {{- toYaml $np.dnsTo | nindent 4 }}
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
- to:
    - ipBlock:
        cidr: {{ $np.externalCIDR }}
        {{- with $np.externalExcept }}
        except:
          {{- toYaml . | nindent 10 }}
        {{- end }}
  ports:
    {{- range $np.downloadPorts }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- with $np.downloadPrivateCIDRs }}
- to:
    {{- range . }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    {{- range $np.downloadPorts }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- end }}
{{- if include "dsdeploy.metadataEgress" . }}
{{- $endpoints := $np.metadataEgress.endpoints }}
{{- if not $endpoints }}
{{- if eq .Values.platform "gke" }}
{{- /* GKE metadata server (workload identity): 169.254.169.254:80, served on the node at 169.254.169.252:988. */}}
{{- $endpoints = list (dict "cidr" "169.254.169.254/32" "port" 80) (dict "cidr" "169.254.169.252/32" "port" 988) }}
{{- else if eq .Values.platform "eks" }}
{{- /* EKS Pod Identity agent, and the instance metadata service (region, IMDS credentials). */}}
{{- $endpoints = list (dict "cidr" "169.254.170.23/32" "port" 80) (dict "cidr" "169.254.169.254/32" "port" 80) }}
{{- else }}
{{- fail "networkPolicy.metadataEgress.enabled is true on platform existing: list the metadata endpoints your cluster uses in networkPolicy.metadataEgress.endpoints ({cidr, port})" }}
{{- end }}
{{- end }}
{{- range $endpoints }}
- to:
    - ipBlock:
        cidr: {{ .cidr }}
  ports:
    - {protocol: TCP, port: {{ .port }}}
{{- end }}
{{- end }}
{{- with $np.downloadExtraEgress }}
{{ toYaml . }}
{{- end }}
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
{{- include "dsdeploy.podSecurityWith" (list . dict) -}}
{{- end -}}

{{/* The same, with fields added to the pod's securityContext (e.g. sysctls). (list $ dict) */}}
{{- define "dsdeploy.podSecurityWith" -}}
{{- $root := index . 0 -}}
automountServiceAccountToken: false
securityContext:
  {{- toYaml (merge (deepCopy (index . 1)) $root.Values.podSecurityContext) | nindent 2 }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* checkov skips that apply to every workload, each with its reason. */}}
{{- define "dsdeploy.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_43=Images are pinned by tag; set image.digest in values to pin by digest (air-gapped registries re-tag images, so digests are opt-in)
checkov.io/skip2: CKV_K8S_15=IfNotPresent is deliberate; images are pinned and air-gapped nodes must start from pre-loaded images without reaching a registry
{{- end -}}

{{/* Integer value of a vLLM flag in an args list, "--flag=N" or "--flag N" (or its short form); 1 when absent.
(list $args "--long-flag" "-short") */}}
{{- define "dsdeploy.vllmArg" -}}
{{- $args := index . 0 -}}
{{- $value := 1 -}}
{{- range $i, $a := $args -}}
{{- range $flag := list (index $ 1) (index $ 2) -}}
{{- if hasPrefix (printf "%s=" $flag) $a -}}
{{- $value = int (trimPrefix (printf "%s=" $flag) $a) -}}
{{- else if and (eq $a $flag) (lt (add1 $i) (len $args)) -}}
{{- $value = int (index $args (add1 $i)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $value -}}
{{- end -}}

{{/* URL of the engine in the router's config. A headless Service resolves to the pod IPs, so the router
connects to the pods' own port (engine.port; the NetworkPolicies allow that port); a ClusterIP Service
is reached on its service port. */}}
{{- define "dsdeploy.engineURL" -}}
{{- $port := ternary .Values.engine.port .Values.engine.service.port .Values.engine.service.headless -}}
{{- printf "http://%s.%s.svc:%d" (include "dsdeploy.componentName" (list . "engine")) .Release.Namespace (int $port) -}}
{{- end -}}

{{- define "dsdeploy.routerURL" -}}
{{- printf "http://%s.%s.svc:%d" (include "dsdeploy.componentName" (list . "router")) .Release.Namespace (int .Values.router.service.port) -}}
{{- end -}}

{{/* The Secret holding the engine's API key (engine.apiKey.existingSecret, else the chart's own) and its key. */}}
{{- define "dsdeploy.engineKeySecretName" -}}
{{- default (include "dsdeploy.componentName" (list . "engine-key")) .Values.engine.apiKey.existingSecret -}}
{{- end -}}
{{- define "dsdeploy.engineKeySecretKey" -}}
{{- ternary .Values.engine.apiKey.key "api-key" (not (empty .Values.engine.apiKey.existingSecret)) -}}
{{- end -}}

{{/* The env var NAME set from the engine key Secret. (list $ "NAME") */}}
{{- define "dsdeploy.engineKeyEnv" -}}
{{- $root := index . 0 -}}
- name: {{ index . 1 }}
  valueFrom:
    secretKeyRef:
      name: {{ include "dsdeploy.engineKeySecretName" $root }}
      key: {{ include "dsdeploy.engineKeySecretKey" $root }}
{{- end -}}

{{/* The env var the router reads the engine key from (its config's upstreams[].api_key: ${...}); the
project's server reads the same variable. */}}
{{- define "dsdeploy.engineKeyEnvName" -}}DSDEPLOY_ENGINE_KEY{{- end -}}

{{/*
The Redis the router replicas share (JSON): router.limits.redis when its host is set, else the Valkey subchart
(valkey.enabled) by its Service name (valkey-helm's valkey.fullname) and password Secret, else no host.
*/}}
{{- define "dsdeploy.routerRedis" -}}
{{- $redis := deepCopy .Values.router.limits.redis -}}
{{- if and $redis.tlsCaSecret.name (not $redis.tls) -}}
{{- fail "router.limits.redis.tlsCaSecret.name is set but router.limits.redis.tls is false: set tls: true (rediss://), or drop the CA Secret" -}}
{{- end -}}
{{- if and (not $redis.host) .Values.valkey.enabled -}}
{{- $vk := .Values.valkey -}}
{{- $host := ternary .Release.Name (printf "%s-valkey" .Release.Name) (contains "valkey" .Release.Name) | trunc 63 | trimSuffix "-" -}}
{{- $secret := dict "name" "" "key" "default" -}}
{{- if and $vk.auth.enabled $vk.auth.usersExistingSecret -}}
{{- $user := index ($vk.auth.aclUsers | default dict) "default" | default dict -}}
{{- $secret = dict "name" $vk.auth.usersExistingSecret "key" ($user.passwordKey | default "default") -}}
{{- end -}}
{{- $egress := list (dict "podSelector" (dict "matchLabels" (dict "app.kubernetes.io/name" "valkey" "app.kubernetes.io/instance" .Release.Name))) -}}
{{- $redis = dict "host" $host "port" 6379 "db" 0 "tls" false "passwordSecret" $secret "egressTo" $egress "tlsCaSecret" (dict "name" "" "key" "ca.crt") -}}
{{- end -}}
{{- toJson $redis -}}
{{- end -}}

{{/*
The engine path that answers 200 only while it takes new work (inference/engines.py READY_PATHS; a test holds
them equal): the readiness probe and the router's health probe read it. dsdeploy serve: /ready (503 from its
SIGTERM on, while open requests finish); vLLM: /health, its only one.
*/}}
{{- define "dsdeploy.engineReadyPath" -}}
{{- ternary "/health" "/ready" (eq .Values.engine.type "vllm") -}}
{{- end -}}

{{/*
Where the router finds the CA bundle of router.limits.redis.tlsCaSecret (its limits.redis_tls_ca_file directory).
*/}}
{{- define "dsdeploy.redisCaDir" -}}
/var/run/dsdeploy/redis-tls
{{- end -}}
