{{/* Chart name. */}}
{{- define "keywarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: RELEASE-keywarden, or fullnameOverride. */}}
{{- define "keywarden.fullname" -}}
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

{{/* Labels of every resource. */}}
{{- define "keywarden.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: keywarden
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of the rotator. */}}
{{- define "keywarden.rotator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keywarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: rotator
{{- end }}

{{/* The image reference: repository@digest or repository:tag. */}}
{{- define "keywarden.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The rotator's service account name. */}}
{{- define "keywarden.rotator.serviceAccountName" -}}
{{- if .Values.rotator.serviceAccount.create }}
{{- default (printf "%s-rotator" (include "keywarden.fullname" .)) .Values.rotator.serviceAccount.name }}
{{- else }}
{{- required "rotator.serviceAccount.name: name the existing service account, or set rotator.serviceAccount.create" .Values.rotator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The workload's name. */}}
{{- define "keywarden.workload.name" -}}
{{- default (include "keywarden.fullname" .) .Values.sidecar.workload.name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of the workload with the sidecar. */}}
{{- define "keywarden.workload.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keywarden.workload.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The sidecar's pods' service account name. */}}
{{- define "keywarden.sidecar.serviceAccountName" -}}
{{- if .Values.sidecar.serviceAccount.create }}
{{- if .Values.sidecar.serviceAccount.name }}
{{- .Values.sidecar.serviceAccount.name }}
{{- else if .Values.sidecar.workload.enabled }}
{{- include "keywarden.workload.name" . }}
{{- else }}
{{- printf "%s-sidecar" (include "keywarden.fullname" .) }}
{{- end }}
{{- else }}
{{- required "sidecar.serviceAccount.name: name the existing service account, or set sidecar.serviceAccount.create" .Values.sidecar.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels selecting the pods that run the sidecar, for NetworkPolicies. */}}
{{- define "keywarden.sidecar.podSelector" -}}
{{- if .Values.sidecar.workload.enabled }}
{{- include "keywarden.workload.selectorLabels" . }}
{{- else if .Values.sidecar.podSelector }}
{{- toYaml .Values.sidecar.podSelector }}
{{- else }}
{{- fail "sidecar.podSelector: give the labels of your pods that run the sidecar (or enable sidecar.workload), so that the NetworkPolicy selects them" }}
{{- end }}
{{- end }}

{{/*
Identity annotations of a service account. Call with
(dict "root" $ "role" "reader"|"rotator").
*/}}
{{- define "keywarden.identity.annotations" -}}
{{- $id := .root.Values.identity }}
{{- if eq $id.type "aws-irsa" }}
{{- $arn := ternary $id.aws.readerRoleArn $id.aws.rotatorRoleArn (eq .role "reader") }}
eks.amazonaws.com/role-arn: {{ required (printf "identity.aws.%sRoleArn: set the IAM role of the %s (identity.type is aws-irsa)" .role .role) $arn | quote }}
{{- if $id.aws.stsRegionalEndpoints }}
eks.amazonaws.com/sts-regional-endpoints: "true"
{{- end }}
{{- else if eq $id.type "gcp-workload-identity" }}
{{- $gsa := ternary $id.gcp.readerServiceAccount $id.gcp.rotatorServiceAccount (eq .role "reader") }}
{{- with $gsa }}
iam.gke.io/gcp-service-account: {{ . | quote }}
{{- end }}
{{- else if eq $id.type "vault-kubernetes" }}
keywarden.dev/vault-role: {{ ternary $id.vault.readerRole $id.vault.rotatorRole (eq .role "reader") | quote }}
{{- end }}
{{- end }}

{{/* The projected Vault token volume, when identity.type is vault-kubernetes. */}}
{{- define "keywarden.identity.volumes" -}}
{{- if eq .Values.identity.type "vault-kubernetes" -}}
- name: vault-token
  projected:
    sources:
      - serviceAccountToken:
          audience: {{ .Values.identity.vault.audience | quote }}
          expirationSeconds: {{ .Values.identity.vault.expirationSeconds }}
          path: token
{{- end }}
{{- end }}

{{/* Its mount in a keywarden container. */}}
{{- define "keywarden.identity.volumeMounts" -}}
{{- if eq .Values.identity.type "vault-kubernetes" -}}
- name: vault-token
  mountPath: {{ .Values.identity.vault.mountPath }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
Keyless mode (federation.enabled): the wif:// store URL of the sidecar's key.
The identity token is the projected service account token below, re-read on
every exchange.
*/}}
{{- define "keywarden.federation.storeURL" -}}
{{- $f := .Values.federation -}}
{{- if not $f.ruleId }}{{ fail "federation.ruleId: give the federation rule's id (fdrl_...)" }}{{ end -}}
{{- if not $f.organizationId }}{{ fail "federation.organizationId: give the organization's id" }}{{ end -}}
{{- $q := list (printf "organization_id=%s" (urlquery $f.organizationId)) -}}
{{- with $f.serviceAccountId }}{{ $q = append $q (printf "service_account_id=%s" (urlquery .)) }}{{ end -}}
{{- with $f.workspaceId }}{{ $q = append $q (printf "workspace_id=%s" (urlquery .)) }}{{ end -}}
{{- $q = append $q "token_file=/var/run/secrets/anthropic/token" -}}
wif://{{ $f.ruleId }}?{{ join "&" $q }}
{{- end }}

{{/* The projected identity token of keyless mode: the federation rule's audience. */}}
{{- define "keywarden.federation.volumes" -}}
{{- if .Values.federation.enabled -}}
- name: anthropic-token
  projected:
    sources:
      - serviceAccountToken:
          audience: {{ .Values.federation.audience | quote }}
          expirationSeconds: {{ .Values.federation.tokenExpirationSeconds }}
          path: token
{{- end }}
{{- end }}

{{/* Its mount in the sidecar. */}}
{{- define "keywarden.federation.volumeMounts" -}}
{{- if .Values.federation.enabled -}}
- name: anthropic-token
  mountPath: /var/run/secrets/anthropic
  readOnly: true
{{- end }}
{{- end }}

{{/* Arguments every keywarden process gets. */}}
{{- define "keywarden.commonArgs" -}}
- --config=/etc/keywarden/config.yaml
- --log-format={{ .Values.logFormat }}
- --log-level={{ .Values.logLevel }}
{{- end }}

{{/* Egress to DNS, the Claude API and the secret store. */}}
{{- define "keywarden.networkPolicy.egress" -}}
{{- $np := .Values.networkPolicy -}}
{{ include "keywarden.networkPolicy.apiEgress" . }}
{{- if not $np.storeEgress }}
{{- fail "networkPolicy.storeEgress: add the egress rules to your secret store (see values.yaml), or set networkPolicy.enabled=false" }}
{{- end }}
{{ toYaml $np.storeEgress }}
{{- end }}

{{/* Egress to DNS and the Claude API only: the keyless sidecar has no store. */}}
{{- define "keywarden.networkPolicy.apiEgress" -}}
{{- $np := .Values.networkPolicy -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ $np.dns.namespace }}
      podSelector:
        matchLabels:
          {{- toYaml $np.dns.podLabels | nindent 10 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
- to:
    {{- range $np.upstreamCIDRs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    - port: 443
      protocol: TCP
{{- end }}
