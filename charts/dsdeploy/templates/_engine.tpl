{{/* The engine's pods: one template for the one-node Deployment and for the leader and workers of a
LeaderWorkerSet (engine.nodesPerReplica > 1). Call with (list $ role), role "" (one node), "leader" or "worker". */}}

{{/* Whether one replica spans nodes (a LeaderWorkerSet). */}}
{{- define "dsdeploy.multiNode" -}}
{{- if gt (int .Values.engine.nodesPerReplica) 1 -}}true{{- end -}}
{{- end -}}

{{/* apiVersion and kind of the engine workload (what an autoscaler scales: LWS replicas are groups). */}}
{{- define "dsdeploy.engineWorkload" -}}
{{- if include "dsdeploy.multiNode" . -}}
apiVersion: leaderworkerset.x-k8s.io/v1
kind: LeaderWorkerSet
{{- else -}}
apiVersion: apps/v1
kind: Deployment
{{- end -}}
{{- end -}}

{{/* GPUs of one engine pod: the replica's GPUs shared equally by its nodes. */}}
{{- define "dsdeploy.gpusPerPod" -}}
{{- div (int .Values.engine.gpusPerReplica) (max 1 (int .Values.engine.nodesPerReplica)) -}}
{{- end -}}

{{/* The label that tells a group's leader from its workers (the engine Service selects leaders only). */}}
{{- define "dsdeploy.engineRoleLabel" -}}dsdeploy.io/engine-role{{- end -}}

{{/* Multi-node checks: an LWS group shares one model cache, so it must be a volume every node mounts. */}}
{{- define "dsdeploy.multiNodeChecks" -}}
{{- $e := .Values.engine -}}
{{- $nodes := int $e.nodesPerReplica -}}
{{- if ne $e.type "vllm" -}}
{{- fail (printf "engine.nodesPerReplica is %d but engine.type is %s: only vLLM runs a replica over several nodes" $nodes $e.type) -}}
{{- end -}}
{{- if mod (int $e.gpusPerReplica) $nodes -}}
{{- fail (printf "engine.gpusPerReplica (%d) must split equally over engine.nodesPerReplica (%d) nodes" (int $e.gpusPerReplica) $nodes) -}}
{{- end -}}
{{- if and (ne .Values.modelCache.accessMode "ReadWriteMany") (include "dsdeploy.downloadEnabled" .) -}}
{{- fail (printf "engine.nodesPerReplica is %d: every node of a replica mounts the model cache, so modelCache.accessMode must be ReadWriteMany (Filestore, EFS, NFS) or the cache pre-filled on such a volume (modelCache.airgapped)" $nodes) -}}
{{- end -}}
{{- $ports := $e.multiNode.ephemeralPorts -}}
{{- $master := int $e.multiNode.masterPort -}}
{{- if gt (int $ports.from) (int $ports.to) -}}
{{- fail (printf "engine.multiNode.ephemeralPorts: from (%d) is above to (%d)" (int $ports.from) (int $ports.to)) -}}
{{- end -}}
{{- if and (ge $master (int $ports.from)) (le $master (int $ports.to)) -}}
{{- fail (printf "engine.multiNode.masterPort (%d) lies inside engine.multiNode.ephemeralPorts (%d-%d): the kernel could hand it to another socket first" $master (int $ports.from) (int $ports.to)) -}}
{{- end -}}
{{- if or (eq $master (int $e.port)) (and (ge (int $e.port) (int $ports.from)) (le (int $e.port) (int $ports.to))) -}}
{{- fail (printf "engine.port (%d) must differ from engine.multiNode.masterPort and lie outside engine.multiNode.ephemeralPorts" (int $e.port)) -}}
{{- end -}}
{{- end -}}

{{/* vLLM's flags for one pod. The layout flags (--pipeline-parallel-size, --nnodes) come from the plan through
engine.extraArgs; a multi-node pod adds its rank and the leader's address, which LWS gives every container as
LWS_WORKER_INDEX and LWS_LEADER_ADDRESS (the Kubernetes $(VAR) syntax expands them). */}}
{{- define "dsdeploy.engineArgs" -}}
{{- $root := index . 0 -}}
{{- $role := index . 1 -}}
{{- $e := $root.Values.engine -}}
- {{ include "dsdeploy.modelDir" $root | quote }}
- --served-model-name={{ $root.Values.model.servedModelName }}
{{- if ne $role "worker" }}
- --host=0.0.0.0
- --port={{ $e.port }}
{{- /* SIGTERM (a rollout, a scale-in): vLLM 0.32 aborts open requests unless --shutdown-timeout is above 0
("0 = abort, >0 = wait", vllm/engine/arg_utils.py; the drain in vllm/entrypoints/launchers/launcher.py);
they get the pod's grace less 10 s, as the server's --drain-grace. */}}
- --shutdown-timeout={{ max 1 (sub (int64 $e.terminationGracePeriodSeconds) 10) }}
{{- end }}
- --tensor-parallel-size={{ int64 $e.tensorParallelSize }}
- --max-model-len={{ int64 $e.maxModelLen }}
{{- if gt (int $e.gpusPerReplica) 0 }}
- --gpu-memory-utilization={{ $e.gpuMemoryUtilization }}
{{- else }}
{{- /* vLLM on CPU sizes its KV cache from the node's free memory unless told; a pod must not. */}}
- --kv-cache-memory-bytes={{ int64 $e.vllm.cpu.kvCacheGiB }}G
{{- end }}
{{- if gt (int $e.maxNumSeqs) 0 }}
- --max-num-seqs={{ int64 $e.maxNumSeqs }}
{{- end }}
{{- with $e.quantization }}
- --quantization={{ . }}
{{- end }}
{{- with $e.reasoningParser }}
- --reasoning-parser={{ . }}
{{- end }}
{{- range $e.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- if ne $role "worker" }}
{{- /* Every path but /health and /metrics needs the engine key (vLLM's own --api-key, read from VLLM_API_KEY,
guards /v1 and a few more only; files/engine_key_guard.py says why). */}}
- --middleware=engine_key_guard.EngineKeyGuard
{{- end }}
{{- if $role }}
- --master-addr=$(LWS_LEADER_ADDRESS)
- --master-port={{ int64 $e.multiNode.masterPort }}
- --node-rank={{ ternary "0" "$(LWS_WORKER_INDEX)" (eq $role "leader") }}
{{- end }}
{{- if eq $role "worker" }}
{{- range $e.multiNode.workerArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The pod template (metadata + spec) of an engine pod. (list $ role) */}}
{{- define "dsdeploy.enginePodTemplate" -}}
{{- $root := index . 0 -}}
{{- $role := index . 1 -}}
{{- $e := $root.Values.engine -}}
{{- $vllm := eq $e.type "vllm" -}}
{{- $gpus := int (include "dsdeploy.gpusPerPod" $root) -}}
{{- $modelDir := include "dsdeploy.modelDir" $root -}}
{{- $download := include "dsdeploy.downloadMode" $root -}}
{{- $name := include "dsdeploy.componentName" (list $root "engine") -}}
metadata:
  labels:
    {{- include "dsdeploy.componentLabels" (list $root "engine") | nindent 4 }}
    {{- if $role }}
    {{ include "dsdeploy.engineRoleLabel" $root }}: {{ $role }}
    {{- end }}
    {{ include "dsdeploy.weightsLabel" $root }}: {{ include "dsdeploy.weightsLabelValue" $root | quote }}
  annotations:
    {{- with $e.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    dsdeploy.io/model: {{ $root.Values.model.id | quote }}
    # Roll the engine when the weights change (model, revision, source, patterns, folder).
    checksum/model: {{ include "dsdeploy.modelChecksum" $root }}
    {{- if eq $role "worker" }}
    checkov.io/skip3: CKV_K8S_8=A multi-node worker serves no HTTP; its engine exiting ends the container and LWS recreates the whole group (the leader's probes cover the group)
    checkov.io/skip4: CKV_K8S_9=A multi-node worker takes no traffic; the engine Service selects the group's leader, whose readiness needs every worker joined
    {{- end }}
spec:
  serviceAccountName: {{ $name }}
  {{- $extra := dict }}
  {{- if $role }}
  {{- /* NCCL, Gloo and vLLM's message queues between the group's pods bind kernel-chosen ports: the pod's range
  is pinned to the one the group's NetworkPolicy opens (a safe, namespaced sysctl the restricted profile allows). */}}
  {{- $range := printf "%d %d" (int $e.multiNode.ephemeralPorts.from) (int $e.multiNode.ephemeralPorts.to) }}
  {{- $extra = dict "sysctls" (list (dict "name" "net.ipv4.ip_local_port_range" "value" $range)) }}
  {{- end }}
  {{- include "dsdeploy.podSecurityWith" (list $root $extra) | nindent 2 }}
  terminationGracePeriodSeconds: {{ int64 $e.terminationGracePeriodSeconds }}
  {{- with $e.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- $selector := $e.nodeSelector }}
  {{- if gt $gpus 0 }}
  {{- $selector = merge (deepCopy $e.nodeSelector) $e.gpu.nodeSelector }}
  {{- end }}
  {{- with $selector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- $tolerations := $e.tolerations }}
  {{- if gt $gpus 0 }}
  {{- $tolerations = concat $e.gpu.tolerations $e.tolerations }}
  {{- end }}
  {{- with $tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $e.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  initContainers:
    # Waits until the model folder is complete: the download Job's marker of this very model, or the
    # pre-filled (air-gapped) folder checked. It reads the volume only: no network, no egress, no identity.
    # Every pod of a multi-node group waits for the same folder.
    - name: wait-for-model
      image: {{ include "dsdeploy.engineImage" $root }}
      imagePullPolicy: {{ (include "dsdeploy.engineImageValues" $root | fromYaml).pullPolicy }}
      command: ["python3", "/opt/dsdeploy/download_model.py"]
      args:
        - --dest={{ $modelDir }}
        {{- if eq $download "job" }}
        - --wait={{ int64 $root.Values.modelCache.waitTimeoutSeconds }}
        {{- include "dsdeploy.modelSourceArgs" $root | nindent 8 }}
        {{- else }}
        - --check-only
        {{- end }}
      securityContext:
        {{- toYaml $root.Values.containerSecurityContext | nindent 8 }}
      resources:
        requests: {cpu: 50m, memory: 64Mi}
        limits: {cpu: 200m, memory: 256Mi}
      volumeMounts:
        - {name: model-cache, mountPath: {{ $root.Values.modelCache.mountPath }}, readOnly: true}
        - {name: download-script, mountPath: /opt/dsdeploy, readOnly: true}
  containers:
    - name: engine
      image: {{ include "dsdeploy.engineImage" $root }}
      imagePullPolicy: {{ (include "dsdeploy.engineImageValues" $root | fromYaml).pullPolicy }}
      {{- if $vllm }}
      command: ["vllm", "serve"]
      args:
        {{- include "dsdeploy.engineArgs" (list $root $role) | nindent 8 }}
      {{- else }}
      command: ["dsdeploy", "serve"]
      args:
        - --model={{ $modelDir }}
        {{- with $root.Values.model.ggufFile }}
        - --gguf-file={{ . }}
        {{- end }}
        - --served-model-name={{ $root.Values.model.servedModelName }}
        - --host=0.0.0.0
        - --port={{ $e.port }}
        - --quantization={{ $e.server.quantization }}
        - --device={{ $e.server.device }}
        - --max-model-len={{ int64 $e.maxModelLen }}
        {{- if gt (int $e.maxNumSeqs) 0 }}
        - --max-num-seqs={{ int64 $e.maxNumSeqs }}
        {{- end }}
        {{- if gt (int $e.server.maxQueue) 0 }}
        - --max-queue={{ int64 $e.server.maxQueue }}
        {{- end }}
        {{- /* SIGTERM: requests get G s to finish, then the open ones are answered and the process exits
        within G + 5 s; 10 s under the pod's grace leaves room before the kubelet's SIGKILL. */}}
        - --drain-grace={{ max 1 (sub (int64 $e.terminationGracePeriodSeconds) 10) }}
        {{- range $e.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      {{- end }}
      env:
        # Weights come from the cache volume only; the engine never calls the hub.
        - {name: HF_HUB_OFFLINE, value: "1"}
        - {name: TRANSFORMERS_OFFLINE, value: "1"}
        - {name: HOME, value: /tmp/home}
        # The UID has no passwd entry; getpass.getuser() (torch inductor, triton) reads these first.
        - {name: USER, value: dsdeploy}
        - {name: LOGNAME, value: dsdeploy}
        - {name: XDG_CACHE_HOME, value: /tmp/cache}
        - {name: HF_HOME, value: /tmp/cache/huggingface}
        {{- if $vllm }}
        - {name: VLLM_NO_USAGE_STATS, value: "1"}
        - {name: DO_NOT_TRACK, value: "1"}
        - {name: VLLM_CACHE_ROOT, value: /tmp/cache/vllm}
        - {name: TRITON_CACHE_DIR, value: /tmp/cache/triton}
        - {name: TORCHINDUCTOR_CACHE_DIR, value: /tmp/cache/inductor}
        {{- end }}
        {{- if ne $role "worker" }}
        # The API key only the router also holds (a worker serves no API).
        {{- if $vllm }}
        {{- include "dsdeploy.engineKeyEnv" (list $root "VLLM_API_KEY") | nindent 8 }}
        # engine_key_guard.py (the --middleware) from the chart's ConfigMap.
        - {name: PYTHONPATH, value: /opt/dsdeploy}
        {{- else }}
        {{- include "dsdeploy.engineKeyEnv" (list $root (include "dsdeploy.engineKeyEnvName" $root)) | nindent 8 }}
        {{- end }}
        {{- end }}
        {{- if $role }}
        # The address vLLM gives the group's other pods for this one (the pod IP, not a guess from its routes).
        - name: VLLM_HOST_IP
          valueFrom: {fieldRef: {fieldPath: status.podIP}}
        {{- end }}
        {{- with $e.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- if ne $role "worker" }}
      ports:
        - name: http
          containerPort: {{ $e.port }}
          protocol: TCP
        {{- if $role }}
        - name: dist-store
          containerPort: {{ $e.multiNode.masterPort }}
          protocol: TCP
        {{- end }}
      startupProbe:
        httpGet: {path: /health, port: http}
        periodSeconds: {{ $e.startupProbe.periodSeconds }}
        failureThreshold: {{ $e.startupProbe.failureThreshold }}
        timeoutSeconds: {{ $e.startupProbe.timeoutSeconds }}
      readinessProbe:
        httpGet: {path: {{ include "dsdeploy.engineReadyPath" $root }}, port: http}
        periodSeconds: {{ $e.readinessProbe.periodSeconds }}
        failureThreshold: {{ $e.readinessProbe.failureThreshold }}
        timeoutSeconds: {{ $e.readinessProbe.timeoutSeconds }}
      livenessProbe:
        httpGet: {path: /health, port: http}
        periodSeconds: {{ $e.livenessProbe.periodSeconds }}
        failureThreshold: {{ $e.livenessProbe.failureThreshold }}
        timeoutSeconds: {{ $e.livenessProbe.timeoutSeconds }}
      {{- else }}
      # A worker serves no HTTP: it has nothing to probe. Its engine exiting ends the container, and the
      # LeaderWorkerSet then recreates the whole group (RecreateGroupOnPodRestart).
      {{- end }}
      resources:
        requests:
          {{- toYaml $e.resources.requests | nindent 10 }}
          {{- if gt $gpus 0 }}
          nvidia.com/gpu: {{ $gpus }}
          {{- end }}
        limits:
          {{- toYaml $e.resources.limits | nindent 10 }}
          {{- if gt $gpus 0 }}
          nvidia.com/gpu: {{ $gpus }}
          {{- end }}
      securityContext:
        {{- toYaml $root.Values.containerSecurityContext | nindent 8 }}
      volumeMounts:
        - {name: model-cache, mountPath: {{ $root.Values.modelCache.mountPath }}, readOnly: true}
        {{- if and $vllm (ne $role "worker") }}
        - {name: download-script, mountPath: /opt/dsdeploy, readOnly: true}
        {{- end }}
        - {name: shm, mountPath: /dev/shm}
        - {name: tmp, mountPath: /tmp}
  volumes:
    - name: model-cache
      persistentVolumeClaim:
        claimName: {{ include "dsdeploy.modelClaim" $root }}
        readOnly: true
    - name: download-script
      configMap:
        name: {{ include "dsdeploy.componentName" (list $root "model-download") }}
    - name: shm
      emptyDir:
        medium: Memory
        sizeLimit: {{ include "dsdeploy.shmSize" $root }}
    - name: tmp
      emptyDir:
        sizeLimit: 20Gi
{{- end -}}

{{/* Checks shared by the Deployment and the LeaderWorkerSet: vLLM's ranks use exactly the replica's GPUs. */}}
{{- define "dsdeploy.engineChecks" -}}
{{- $e := .Values.engine -}}
{{- $gpus := int $e.gpusPerReplica -}}
{{- $nodes := int $e.nodesPerReplica -}}
{{- if include "dsdeploy.multiNode" . -}}
{{- include "dsdeploy.multiNodeChecks" . -}}
{{- end -}}
{{- if and (eq $e.type "vllm") (gt $gpus 0) -}}
{{- /* vLLM uses tensor x pipeline (x data) parallel GPUs per replica; any other GPU count is a broken or idle pod. */ -}}
{{- $ranks := mul (int $e.tensorParallelSize) (int (include "dsdeploy.vllmArg" (list $e.extraArgs "--pipeline-parallel-size" "-pp"))) (int (include "dsdeploy.vllmArg" (list $e.extraArgs "--data-parallel-size" "-dp"))) -}}
{{- $nnodes := int (include "dsdeploy.vllmArg" (list $e.extraArgs "--nnodes" "-n")) -}}
{{- if and (eq $nodes 1) (gt (int $e.tensorParallelSize) $gpus) -}}
{{- fail (printf "engine.tensorParallelSize (%d) needs as many GPUs, but engine.gpusPerReplica is %d" (int $e.tensorParallelSize) $gpus) -}}
{{- else if gt (int $e.tensorParallelSize) (int (include "dsdeploy.gpusPerPod" .)) -}}
{{- fail (printf "engine.tensorParallelSize (%d) needs as many GPUs in one pod, but a pod gets %s (engine.gpusPerReplica %d over engine.nodesPerReplica %d)" (int $e.tensorParallelSize) (include "dsdeploy.gpusPerPod" .) $gpus $nodes) -}}
{{- else if ne $ranks $gpus -}}
{{- fail (printf "engine.gpusPerReplica is %d but vLLM would use %d GPU(s) (tensorParallelSize %d x --pipeline-parallel-size x --data-parallel-size in engine.extraArgs); the other GPUs would sit idle. Set engine.tensorParallelSize to %d (the planner's values keep them equal) or lower engine.gpusPerReplica" $gpus $ranks (int $e.tensorParallelSize) (div $gpus (max 1 (div $ranks (int $e.tensorParallelSize))))) -}}
{{- else if ne $nnodes $nodes -}}
{{- fail (printf "engine.extraArgs gives vLLM --nnodes %d but engine.nodesPerReplica is %d: vLLM and the LeaderWorkerSet must agree on the nodes of one replica (the planner's values set both)" $nnodes $nodes) -}}
{{- end -}}
{{- end -}}
{{- if and $e.autoscaling.enabled (gt (int $e.autoscaling.minReplicas) (int $e.autoscaling.maxReplicas)) -}}
{{- fail (printf "engine.autoscaling.minReplicas (%d) is above engine.autoscaling.maxReplicas (%d)" (int $e.autoscaling.minReplicas) (int $e.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- end -}}

{{/* The ports a multi-node group's pods open to each other. */}}
{{- define "dsdeploy.groupPorts" -}}
{{- $m := .Values.engine.multiNode -}}
- {protocol: TCP, port: {{ int64 $m.masterPort }}}
- {protocol: TCP, port: {{ int64 $m.ephemeralPorts.from }}, endPort: {{ int64 $m.ephemeralPorts.to }}}
{{- end -}}
