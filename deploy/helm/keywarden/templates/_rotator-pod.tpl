{{/* The rotator's pod spec; call with (dict "root" $ "args" LIST "daemon" BOOL). */}}
{{- define "keywarden.rotator.podSpec" -}}
{{- $v := .root.Values -}}
serviceAccountName: {{ include "keywarden.rotator.serviceAccountName" .root }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
containers:
  - name: keywarden
    image: {{ include "keywarden.image" .root | quote }}
    imagePullPolicy: {{ $v.image.pullPolicy }}
    args:
      {{- toYaml .args | nindent 6 }}
    {{- if .daemon }}
    ports:
      - name: kw-metrics
        containerPort: {{ $v.rotator.daemon.metricsPort }}
        protocol: TCP
    readinessProbe:
      httpGet:
        path: /healthz
        port: kw-metrics
      periodSeconds: 10
    livenessProbe:
      httpGet:
        path: /healthz
        port: kw-metrics
      periodSeconds: 10
      failureThreshold: 3
    {{- end }}
    resources:
      {{- toYaml $v.rotator.resources | nindent 6 }}
    securityContext:
      {{- toYaml $v.securityContext | nindent 6 }}
    volumeMounts:
      - name: keywarden-config
        mountPath: /etc/keywarden
        readOnly: true
      {{- with include "keywarden.identity.volumeMounts" .root }}{{ . | nindent 6 }}{{ end }}
volumes:
  - name: keywarden-config
    configMap:
      name: {{ default (printf "%s-rotator" (include "keywarden.fullname" .root)) $v.rotator.existingConfigMap }}
  {{- with include "keywarden.identity.volumes" .root }}{{ . | nindent 2 }}{{ end }}
{{- with $v.rotator.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.rotator.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.rotator.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
