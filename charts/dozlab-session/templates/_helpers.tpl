{{/*
Names of the session's objects: they keep the original manifest's names so
existing `kubectl ... lab-session-<id>` habits keep working.
*/}}
{{- define "dozlab-session.id" -}}
{{- include "dozlab-session.str" (required "session.id is required: set a unique session id, e.g. --set session.id=alice-001" .Values.session.id) -}}
{{- end -}}

{{/*
A value as a string. Numbers from values files and the Helm SDK arrive as
float64, which toString would print as 1.2345678e+07: whole numbers are
printed as integers instead.
*/}}
{{- define "dozlab-session.str" -}}
{{- if kindIs "float64" . -}}
{{- if eq . (floor .) -}}{{- printf "%.0f" . -}}{{- else -}}{{- toString . -}}{{- end -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{- define "dozlab-session.podName" -}}
lab-session-{{ include "dozlab-session.id" . }}
{{- end -}}

{{- define "dozlab-session.serviceName" -}}
lab-service-{{ include "dozlab-session.id" . }}
{{- end -}}

{{- define "dozlab-session.secretName" -}}
{{- if .Values.codeServer.existingSecret -}}
{{- .Values.codeServer.existingSecret -}}
{{- else -}}
lab-session-{{ include "dozlab-session.id" . }}-secrets
{{- end -}}
{{- end -}}

{{- define "dozlab-session.secretKey" -}}
{{- if .Values.codeServer.existingSecret -}}
{{- .Values.codeServer.existingSecretKey | default "password" -}}
{{- else -}}
vscode-password
{{- end -}}
{{- end -}}

{{/* Fails with a message naming the keys when the password settings conflict. */}}
{{- define "dozlab-session.checkPassword" -}}
{{- if and .Values.codeServer.password .Values.codeServer.existingSecret -}}
{{- fail "codeServer.password and codeServer.existingSecret are both set: keep one (existingSecret for passwords kept out of Git)" -}}
{{- end -}}
{{- if not (or .Values.codeServer.password .Values.codeServer.existingSecret) -}}
{{- fail "codeServer.password or codeServer.existingSecret is required: set a password (--set codeServer.password=...) or the name of an existing Secret" -}}
{{- end -}}
{{- end -}}

{{/*
The chart's own labels. Selector labels are stable; the rest describe the
release. User labels (.Values.labels) are merged underneath: ours win.
*/}}
{{- define "dozlab-session.selectorLabels" -}}
app: lab-environment
session-id: {{ include "dozlab-session.id" . | quote }}
{{- end -}}

{{- define "dozlab-session.labels" -}}
{{- $own := fromYaml (include "dozlab-session.ownLabels" .) -}}
{{- $all := merge $own (deepCopy (.Values.labels | default dict)) -}}
{{- toYaml $all -}}
{{- end -}}

{{- define "dozlab-session.ownLabels" -}}
{{ include "dozlab-session.selectorLabels" . }}
user-id: {{ include "dozlab-session.str" (required "session.userId is required: set who the session is for, e.g. --set session.userId=alice" .Values.session.userId) | quote }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: lab-session
app.kubernetes.io/part-of: dozlab
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/*
An image reference from an image block {repository, tag, pullPolicy}.
Usage: include "dozlab-session.image" (list $ .Values.terminal.image)
*/}}
{{- define "dozlab-session.image" -}}
{{- $root := index . 0 -}}
{{- $img := index . 1 -}}
{{- $tag := include "dozlab-session.str" ($img.tag | default $root.Chart.AppVersion) -}}
{{- if $root.Values.imageRegistry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $root.Values.imageRegistry) $img.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" $img.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
session.ttl in seconds: "7200", 7200, "2h", "1h30m", "1d", "90m", "45s".
"" or "0" give 0 (no deadline).
*/}}
{{- define "dozlab-session.ttlSeconds" -}}
{{- $ttl := include "dozlab-session.str" (.Values.session.ttl | default "") | trim | lower -}}
{{- if regexMatch "^[0-9]+$" $ttl -}}
{{- int64 $ttl -}}
{{- else if regexMatch "^([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$" $ttl -}}
{{- $units := dict "d" 86400 "h" 3600 "m" 60 "s" 1 -}}
{{- $total := 0 -}}
{{- range $part := regexFindAll "[0-9]+[dhms]" $ttl -1 -}}
{{- $unit := substr (int (sub (len $part) 1)) (len $part) $part -}}
{{- $n := int64 (trimSuffix $unit $part) -}}
{{- $total = add $total (mul $n (get $units $unit)) -}}
{{- end -}}
{{- $total -}}
{{- else -}}
{{- fail (printf "session.ttl %q is not a duration: write seconds (7200) or d/h/m/s parts (2h, 1h30m); \"\" disables the limit" $ttl) -}}
{{- end -}}
{{- end -}}

{{/* FORWARD_PORTS for network-setup: SSH first, then PORT:VMPORT per forwardPorts entry. */}}
{{- define "dozlab-session.forwardPorts" -}}
{{- $ports := list "22" -}}
{{- range .Values.forwardPorts -}}
{{- $ports = append $ports (printf "%d:%d" (int .port) (int (.vmPort | default .port))) -}}
{{- end -}}
{{- join "," $ports -}}
{{- end -}}

{{/* Fails when two forwardPorts entries share a name or a port. */}}
{{- define "dozlab-session.checkForwardPorts" -}}
{{- $names := dict -}}
{{- $ports := dict -}}
{{- range $i, $p := .Values.forwardPorts -}}
{{- if hasKey $names $p.name -}}
{{- fail (printf "forwardPorts[%d].name %q is used twice: give each forwarded port its own name" $i $p.name) -}}
{{- end -}}
{{- if hasKey $ports (toString $p.port) -}}
{{- fail (printf "forwardPorts[%d].port %v is used twice: forward each pod port once" $i $p.port) -}}
{{- end -}}
{{- $_ := set $names $p.name true -}}
{{- $_ := set $ports (toString $p.port) true -}}
{{- end -}}
{{- end -}}

{{/* The VM container's resources: the user's, plus one kvm and one tun device in device-plugin mode. */}}
{{- define "dozlab-session.vmResources" -}}
{{- $res := deepCopy (.Values.firecracker.resources | default dict) -}}
{{- if eq .Values.firecracker.devices.mode "devicePlugin" -}}
{{- $limits := deepCopy (get $res "limits" | default dict) -}}
{{- if .Values.firecracker.devices.kvm -}}
{{- $_ := set $limits .Values.firecracker.devices.kvmResource "1" -}}
{{- end -}}
{{- $_ := set $limits .Values.firecracker.devices.tunResource "1" -}}
{{- $_ := set $res "limits" $limits -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}

{{/* network-setup's resources: one tun device in device-plugin mode. */}}
{{- define "dozlab-session.netResources" -}}
{{- $res := deepCopy (.Values.networkSetup.resources | default dict) -}}
{{- if eq .Values.firecracker.devices.mode "devicePlugin" -}}
{{- $limits := deepCopy (get $res "limits" | default dict) -}}
{{- $_ := set $limits .Values.firecracker.devices.tunResource "1" -}}
{{- $_ := set $res "limits" $limits -}}
{{- end -}}
{{- toYaml $res -}}
{{- end -}}

{{/* Ingress hosts: explicit ones win, else <id>-vscode.<domain> / <id>-terminal.<domain>. */}}
{{- define "dozlab-session.vscodeHost" -}}
{{- if .Values.ingress.vscode.host -}}
{{- .Values.ingress.vscode.host -}}
{{- else if .Values.ingress.domain -}}
{{- printf "%s-vscode.%s" (include "dozlab-session.id" .) .Values.ingress.domain -}}
{{- end -}}
{{- end -}}

{{- define "dozlab-session.terminalHost" -}}
{{- if .Values.ingress.terminal.host -}}
{{- .Values.ingress.terminal.host -}}
{{- else if .Values.ingress.domain -}}
{{- printf "%s-terminal.%s" (include "dozlab-session.id" .) .Values.ingress.domain -}}
{{- end -}}
{{- end -}}

{{/* The password as a secretKeyRef env source (never a literal). */}}
{{- define "dozlab-session.passwordRef" -}}
valueFrom:
  secretKeyRef:
    name: {{ include "dozlab-session.secretName" . }}
    key: {{ include "dozlab-session.secretKey" . }}
{{- end -}}

{{/*
Fails when the lab settings conflict: lab.url and lab.configMap both set,
lab.sha256 without lab.url, or a lab.url download the NetworkPolicy would
block (no egress at all besides DNS).
*/}}
{{- define "dozlab-session.checkLab" -}}
{{- $lab := .Values.lab | default dict -}}
{{- if and $lab.url $lab.configMap -}}
{{- fail "lab.url and lab.configMap are both set: keep one (url for a .tar.gz served over http(s), configMap for a lab kept in the cluster)" -}}
{{- end -}}
{{- if and $lab.sha256 (not $lab.url) -}}
{{- fail "lab.sha256 is set without lab.url: it checks the downloaded .tar.gz; set lab.url or remove lab.sha256" -}}
{{- end -}}
{{- $np := .Values.networkPolicy -}}
{{- if and $lab.url $np.enabled (not (or $np.egressTo $np.allowInternetEgress .Values.network.allowCidrs)) -}}
{{- fail "lab.url cannot be downloaded: the NetworkPolicy allows no egress (networkPolicy.allowInternetEgress is false and networkPolicy.egressTo and network.allowCidrs are empty); add the lab server to networkPolicy.egressTo or use lab.configMap" -}}
{{- end -}}
{{- end -}}

{{/*
Fails when snapshots cannot work: they need vmm=qemu (Firecracker sessions
do not restore snapshots yet) and rootfs.sha256 (the image's digest keys
the cache: without it a snapshot of another image could be restored).
*/}}
{{- define "dozlab-session.checkSnapshot" -}}
{{- $s := .Values.snapshot | default dict -}}
{{- if $s.enabled -}}
{{- if ne .Values.vmm "qemu" -}}
{{- fail (printf "snapshot.enabled needs vmm: qemu (vmm is %q): Firecracker sessions boot normally for now; set vmm: qemu or snapshot.enabled: false" .Values.vmm) -}}
{{- end -}}
{{- if not .Values.rootfs.sha256 -}}
{{- fail "snapshot.enabled needs rootfs.sha256: the image's digest keys the snapshot cache, so a snapshot of another image is never restored; set rootfs.sha256 or snapshot.enabled: false" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "true" when the session has a lab (lab.url or lab.configMap), else "". */}}
{{- define "dozlab-session.hasLab" -}}
{{- $lab := .Values.lab | default dict -}}
{{- if or $lab.url $lab.configMap -}}true{{- end -}}
{{- end -}}
