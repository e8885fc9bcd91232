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

{{- define "starling.secretEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secret.name }}
      key: {{ .Values.secret.databaseUrlKey }}
{{- end -}}


{{- define "starling.redisEnv" -}}
- name: REDIS_URL
{{- if .Values.redisSentinel.enabled }}
  value: {{ printf "%s://%s/%s" (ternary "rediss+sentinel" "redis+sentinel" .Values.redisSentinel.tls) (join "," .Values.redisSentinel.sentinels) .Values.redisSentinel.masterName | quote }}
{{- else }}
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
