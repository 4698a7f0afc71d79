{{/*
Names of our objects are fixed (like z2jh's `hub`, `proxy-public`): the hub's service
registrations (jupyterhub.hub.services) and the gateway's env refer to them from plain
values, which cannot be templated. One release per namespace.
*/}}
{{- define "cscale.settingsName" -}}cscale-settings{{- end }}

{{- define "cscale.labels" -}}
app.kubernetes.io/part-of: cscale-hub
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "cscale.selector" -}}
app.kubernetes.io/part-of: cscale-hub
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* image reference of a component: its own image, else the single-user image */}}
{{- define "cscale.image" -}}
{{- $root := index . 0 }}{{- $img := index . 1 }}
{{- if $img.name }}
{{- printf "%s:%s" $img.name $img.tag }}
{{- else }}
{{- printf "%s:%s" $root.Values.cscale.kubernetes.image.name $root.Values.cscale.kubernetes.image.tag }}
{{- end }}
{{- end }}

{{- define "cscale.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.cscale.kubernetes.uid }}
runAsGroup: {{ .Values.cscale.kubernetes.fs_gid }}
fsGroup: {{ .Values.cscale.kubernetes.fs_gid }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "cscale.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end }}

{{/*
Environment of a service the hub proxies (eo-mqs, runs): the variables JupyterHub gives the
services it starts itself, with the api token z2jh generated for `hub.services.<name>`.
*/}}
{{- define "cscale.hubServiceEnv" -}}
{{- $root := index . 0 }}{{- $name := index . 1 }}{{- $port := index . 2 }}
- name: CSCALE_HUB_CONFIG
  value: /etc/cscale/config.yaml
- name: JUPYTERHUB_SERVICE_NAME
  value: {{ $name }}
- name: JUPYTERHUB_API_URL
  value: http://hub:8081{{ $root.Values.jupyterhub.hub.baseUrl | default "/" | trimSuffix "/" }}/hub/api
- name: JUPYTERHUB_BASE_URL
  value: {{ $root.Values.jupyterhub.hub.baseUrl | default "/" | quote }}
- name: JUPYTERHUB_SERVICE_PREFIX
  value: {{ printf "%s/services/%s/" ($root.Values.jupyterhub.hub.baseUrl | default "/" | trimSuffix "/") $name | quote }}
- name: JUPYTERHUB_SERVICE_URL
  value: http://0.0.0.0:{{ $port }}
- name: JUPYTERHUB_CLIENT_ID
  value: service-{{ $name }}
- name: JUPYTERHUB_OAUTH_CALLBACK_URL
  value: {{ printf "%s/services/%s/oauth_callback" ($root.Values.jupyterhub.hub.baseUrl | default "/" | trimSuffix "/") $name | quote }}
- name: JUPYTERHUB_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: hub
      key: hub.services.{{ $name }}.apiToken
{{- end }}

{{/*
Names of the dask-gateway subchart's objects, as that chart derives them from the release
(its fullname: the fullnameOverride if any, else <release>-dask-gateway, or the release name
when it already contains "dask-gateway"), prefixed by the component: (list . "traefik").
*/}}
{{- define "cscale.daskGatewayName" -}}
{{- $root := index . 0 }}{{- $component := index . 1 }}
{{- $dg := index $root.Values "dask-gateway" }}
{{- $name := default "dask-gateway" $dg.nameOverride }}
{{- $full := "" }}
{{- if $dg.fullnameOverride }}
{{- $full = $dg.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains $name $root.Release.Name }}
{{- $full = $root.Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $full = printf "%s-%s" $root.Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- if $component }}{{ printf "%s-%s" $component $full | trunc 63 | trimSuffix "-" }}{{ else }}{{ $full }}{{ end }}
{{- end }}
