{{/* The download Job's spec. (list $ serviceAccountName nodeSelector tolerations affinity pinned) */}}
{{- define "dsdeploy.downloadJobSpec" -}}
{{- $root := index . 0 -}}
{{- $saName := index . 1 -}}
{{- $selector := index . 2 -}}
{{- $tolerations := index . 3 -}}
{{- $affinity := index . 4 -}}
{{- $pinned := index . 5 -}}
{{- $d := $root.Values.modelCache.download -}}
backoffLimit: {{ $d.backoffLimit }}
{{- if not $pinned }}
activeDeadlineSeconds: {{ $d.timeoutSeconds }}
{{- end }}
{{- if gt (int $d.ttlSecondsAfterFinished) 0 }}
ttlSecondsAfterFinished: {{ $d.ttlSecondsAfterFinished }}
{{- end }}
template:
  metadata:
    labels:
      {{- include "dsdeploy.componentLabels" (list $root "model-download") | nindent 6 }}
  spec:
    restartPolicy: Never
    {{- if $pinned }}
    {{- /* Pinned to the engine's node, the pod is Pending until an engine pod is scheduled, which on a Flex-start
    or autoscaled GPU pool can take hours: a Job deadline would count that wait. The pod's deadline counts from
    when the kubelet starts it. */}}
    activeDeadlineSeconds: {{ $d.timeoutSeconds }}
    {{- end }}
    serviceAccountName: {{ $saName }}
    {{- include "dsdeploy.podSecurity" $root | nindent 4 }}
    {{- with $selector }}
    nodeSelector:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with $tolerations }}
    tolerations:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with $affinity }}
    affinity:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    containers:
      {{- include "dsdeploy.downloadContainer" (list $root "download") | nindent 6 }}
    volumes:
      - name: model-cache
        persistentVolumeClaim:
          claimName: {{ include "dsdeploy.modelClaim" $root }}
      - name: download-script
        configMap:
          name: {{ $saName }}
      - name: tmp
        emptyDir:
          sizeLimit: 2Gi
      {{- include "dsdeploy.tokenVolume" $root | nindent 6 }}
{{- end -}}
