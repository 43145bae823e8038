{{/*
The keywarden sidecar as a native sidecar: an init container with
restartPolicy: Always. Its startup probe holds the application back until
the key is loaded.
*/}}
{{- define "keywarden.sidecar.initContainer" -}}
{{- $s := .Values.sidecar -}}
- name: keywarden
  image: {{ include "keywarden.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  restartPolicy: Always
  args:
    - sidecar
    {{- include "keywarden.commonArgs" . | nindent 4 }}
  env:
    - name: GOMEMLIMIT
      value: {{ $s.goMemLimit | quote }}
  ports:
    - name: kw-metrics
      containerPort: {{ $s.metricsPort }}
      protocol: TCP
  startupProbe:
    httpGet:
      path: /readyz
      port: kw-metrics
    {{- toYaml $s.startupProbe | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: kw-metrics
    {{- toYaml $s.readinessProbe | nindent 4 }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: kw-metrics
    {{- toYaml $s.livenessProbe | nindent 4 }}
  resources:
    {{- toYaml $s.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: keywarden-config
      mountPath: /etc/keywarden
      readOnly: true
    {{- with include "keywarden.identity.volumeMounts" . }}{{ . | nindent 4 }}{{ end }}
    {{- with include "keywarden.federation.volumeMounts" . }}{{ . | nindent 4 }}{{ end }}
{{- end }}

{{/* The sidecar's volumes. */}}
{{- define "keywarden.sidecar.volumes" -}}
- name: keywarden-config
  configMap:
    name: {{ default (printf "%s-sidecar" (include "keywarden.fullname" .)) .Values.sidecar.existingConfigMap }}
{{- with include "keywarden.identity.volumes" . }}{{ . | nindent 0 }}{{ end }}
{{- with include "keywarden.federation.volumes" . }}{{ . | nindent 0 }}{{ end }}
{{- end }}
