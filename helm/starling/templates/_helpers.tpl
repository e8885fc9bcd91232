{{- define "starling.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "starling.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "starling.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- /* The container port the probes and the ServiceMonitor use. */}}
{{- define "starling.opsPort" -}}
{{- if .Values.metrics.port }}metrics{{ else }}nostr{{ end -}}
{{- end -}}

{{- define "starling.secretEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secret.name }}
      key: {{ .Values.secret.databaseUrlKey }}
{{- end -}}


{{- /* REDIS_URL; behind Sentinel made from the values, its credentials taken from the
Secret into variables that Kubernetes expands in REDIS_URL ($(NAME)), defined before it. */}}
{{- define "starling.redisEnv" -}}
{{- if .Values.redisSentinel.enabled }}
{{- $auth := .Values.redisSentinel.auth | default dict }}
{{- $credentials := dict "REDIS_USERNAME" $auth.usernameKey "REDIS_PASSWORD" $auth.passwordKey "REDIS_SENTINEL_USERNAME" $auth.sentinelUsernameKey "REDIS_SENTINEL_PASSWORD" $auth.sentinelPasswordKey }}
{{- range $name, $key := $credentials }}
{{- if $key }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.secret.name }}
      key: {{ $key }}
{{- end }}
{{- end }}
{{- $userinfo := "" }}
{{- if or $auth.usernameKey $auth.passwordKey }}
{{- $userinfo = printf "%s:%s@" (ternary "$(REDIS_USERNAME)" "" (not (empty $auth.usernameKey))) (ternary "$(REDIS_PASSWORD)" "" (not (empty $auth.passwordKey))) }}
{{- end }}
{{- $query := list }}
{{- if $auth.sentinelUsernameKey }}
{{- $query = append $query "sentinel_username=$(REDIS_SENTINEL_USERNAME)" }}
{{- end }}
{{- if $auth.sentinelPasswordKey }}
{{- $query = append $query "sentinel_password=$(REDIS_SENTINEL_PASSWORD)" }}
{{- end }}
- name: REDIS_URL
  value: {{ printf "%s://%s%s/%s%s" (ternary "rediss+sentinel" "redis+sentinel" .Values.redisSentinel.tls) $userinfo (join "," .Values.redisSentinel.sentinels) .Values.redisSentinel.masterName (ternary (printf "?%s" (join "&" $query)) "" (gt (len $query) 0)) | quote }}
{{- else }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secret.name }}
      key: {{ .Values.secret.redisUrlKey }}
{{- end }}
{{- end -}}

{{- define "starling.tlsMounts" -}}
{{- if .Values.tls.postgres.secretName }}
- name: postgres-tls
  mountPath: /etc/starling/tls/postgres
  readOnly: true
{{- end }}
{{- if .Values.tls.redis.secretName }}
- name: redis-tls
  mountPath: /etc/starling/tls/redis
  readOnly: true
{{- end }}
{{- end -}}

{{- define "starling.tlsVolumes" -}}
{{- if .Values.tls.postgres.secretName }}
- name: postgres-tls
  secret:
    secretName: {{ .Values.tls.postgres.secretName }}
    defaultMode: 0440
{{- end }}
{{- if .Values.tls.redis.secretName }}
- name: redis-tls
  secret:
    secretName: {{ .Values.tls.redis.secretName }}
    defaultMode: 0440
{{- end }}
{{- end -}}
