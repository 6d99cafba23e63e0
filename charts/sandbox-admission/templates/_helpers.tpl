{{/* The namespace of every namespaced object. */}}
{{- define "sa.namespace" -}}
{{- .Values.namespace.name | default .Release.Namespace -}}
{{- end -}}

{{/* Labels of every object: the same single label as manifests/. */}}
{{- define "sa.labels" -}}
app.kubernetes.io/name: sandbox-admission
{{- end -}}

{{/* Policy files a server loads: modules and their metadata, not unit tests or the kustomization. */}}
{{- define "sa.policyFiles" -}}
{{- $files := list -}}
{{- range $path, $_ := .Files.Glob "policies/*" -}}
{{- $name := base $path -}}
{{- $rego := and (hasSuffix ".rego" $name) (not (hasSuffix "_test.rego" $name)) -}}
{{- $meta := and (or (hasSuffix ".yaml" $name) (hasSuffix ".yml" $name)) (ne $name "kustomization.yaml") -}}
{{- if or $rego $meta -}}
{{- $files = append $files $path -}}
{{- end -}}
{{- end -}}
{{- toJson $files -}}
{{- end -}}

{{/*
The server's configuration file: the shipped one verbatim (comments and all, as kustomize puts it
in its ConfigMap) unless a value changes it; then the merged YAML.
*/}}
{{- define "sa.config" -}}
{{- $file := .Files.Get "files/config.yaml" -}}
{{- $shipped := fromYaml $file -}}
{{- $merged := deepCopy $shipped -}}
{{- $_ := set $merged.service "namespace" (include "sa.namespace" .) -}}
{{- $_ := set $merged.decisionLog "stdout" .Values.audit.decisionLog -}}
{{- $_ := set $merged.decisionLog "includeObjects" .Values.audit.includeObjects -}}
{{- $_ := set $merged.events "enabled" .Values.audit.events -}}
{{- $merged = mergeOverwrite $merged (deepCopy .Values.config) -}}
{{- if eq (toJson $merged) (toJson $shipped) -}}
{{- $file -}}
{{- else -}}
{{- toYaml $merged -}}
{{- end -}}
{{- end -}}

{{/* The ConfigMap's name changes with its content, as kustomize's hash suffix does: a changed configuration rolls the Deployment. */}}
{{- define "sa.configName" -}}
sandbox-admission-config-{{ include "sa.config" . | sha256sum | trunc 10 }}
{{- end -}}

{{/* Whether this webhook entry's pods are Sandbox pods (the CEL both kinds of entry use). */}}
{{- define "sa.sandboxPod" -}}
(has(object.metadata.labels) && 'agents.x-k8s.io/sandbox-name-hash' in object.metadata.labels) ||
(has(object.metadata.ownerReferences) && object.metadata.ownerReferences.exists(r,
has(r.controller) && r.controller && r.kind == 'Sandbox' && r.apiVersion.startsWith('agents.x-k8s.io/')))
{{- end -}}
