# Helpers shared by the sandbox policies: which objects are judged, and where their pod spec is.
package lib.sandbox

import rego.v1

review := input.review

obj := review.object

sandbox_group := "agents.x-k8s.io"

extensions_group := "extensions.agents.x-k8s.io"

is_kind(group, kind) if {
	review.kind.group == group
	review.kind.kind == kind
}

is_sandbox if is_kind(sandbox_group, "Sandbox")

is_template if is_kind(extensions_group, "SandboxTemplate")

is_claim if is_kind(extensions_group, "SandboxClaim")

is_warm_pool if is_kind(extensions_group, "SandboxWarmPool")

# A pod the Sandbox controller made: a controller ownerReference to a Sandbox, or its label.
is_sandbox_pod if {
	is_kind("", "Pod")
	some ref in object.get(obj, ["metadata", "ownerReferences"], [])
	ref.controller == true
	ref.kind == "Sandbox"
	startswith(ref.apiVersion, "agents.x-k8s.io/")
}

is_sandbox_pod if {
	is_kind("", "Pod")
	_ = obj.metadata.labels["agents.x-k8s.io/sandbox-name-hash"]
}

# An object on its way out (finalizers being removed) is not judged again: refusing that
# update would leave it stuck in deletion.
being_deleted if obj.metadata.deletionTimestamp

# Pod specs are immutable once created, except for ephemeral containers (their own
# subresource), so Sandbox pods are judged on CREATE and when ephemeral containers are added.
pod_judged if review.operation == "CREATE"

pod_judged if review.subResource == "ephemeralcontainers"

# What the server knows beyond the AdmissionRequest (policies/README.md, "What the server
# adds"): the effective pod of a Sandbox or template, how it is judged, the runtimes it knows.
# Absent when a policy runs elsewhere (OPA, Gatekeeper, `opa test`): the rules then judge the
# object as written.
context := object.get(input, "sandbox_admission", {})

# A Sandbox's or template's pod spec as written by its author.
written_spec := object.get(obj, ["spec", "podTemplate", "spec"], {})

# The pod spec a Sandbox or template is judged by: the pod the controller will create, as this
# webhook's mutation leaves it, when the server offers it; otherwise the spec as written.
# Written as `else` chains where the definitions cannot both hold, here and below: every
# definition of a rule is evaluated (to detect conflicting values), a chain stops at the first
# that holds, and the result is the same.
template_spec := spec if {
	spec := context.effective_pod.spec
} else := written_spec if not context.effective_pod

judging_effective if context.effective_pod

# The pod spec under judgement. Missing in a Sandbox or template it is `{}`, so every rule that
# needs a field finds it absent and fails closed. Undefined for objects with no pod spec
# (plain pods, other kinds): the pod rules do not apply to them.
pod_spec := template_spec if {
	is_sandbox
	not being_deleted
} else := template_spec if {
	is_template
	not being_deleted
} else := object.get(obj, "spec", {}) if {
	is_sandbox_pod
	pod_judged
}

# The pointers the mutation set, each followed by a `/`, built once per review. (A rule with a
# body rather than a comprehension: `explain` attributes a comprehension's outputs to the rule
# being explained when the interpreter evaluates this module's rules along the way.)
defaulted_prefixes contains concat("", [d, "/"]) if some d in object.get(context, "defaulted", [])

# Did the mutation fill in the pod spec field at `path` (a JSON pointer under the spec, such as
# "/runtimeClassName" or "/containers/0/securityContext")? It did when the field's pointer is
# one the mutation set or lies within one (`/spec/containers/0` for `/spec/containers/0/image`,
# not `/spec/containers/1` for `/spec/containers/10`): with a `/` after both, the one begins
# with the other. One builtin call per message, not a rule body per level of the path.
defaulted(path) if strings.any_prefix_match(concat("", ["/spec", path, "/"]), defaulted_prefixes)

# Where a judged value came from, for denial messages: the author, or this webhook's defaults.
# Empty when the object is judged as written (nothing was filled in). The `else` asks
# `defaulted(path)` once per message, not once for each answer.
origin(path) := " (filled in by sandbox-admission)" if {
	judging_effective
	defaulted(path)
} else := sprintf(" (as written in the %s)", [review.kind.kind]) if judging_effective

origin(_) := "" if not judging_effective

# `name` equals `pattern`, or starts with it when it ends in `*`.
matches_pattern(name, pattern) if name == pattern

matches_pattern(name, pattern) if {
	endswith(pattern, "*")
	startswith(name, trim_suffix(pattern, "*"))
}

container_fields := ["containers", "initContainers", "ephemeralContainers"]

# Every container of the pod spec, with the field it came from and its JSON pointer.
containers contains {"field": field, "name": object.get(c, "name", "(unnamed)"), "spec": c, "path": sprintf("/%s/%d", [field, i])} if {
	some field in container_fields
	list := object.get(pod_spec, field, [])
	is_array(list)
	some i, c in list
}

# Ephemeral containers may not set resources or ports, so those rules skip them.
regular_containers contains c if {
	some c in containers
	c.field != "ephemeralContainers"
}

# A pod spec with no usable `containers` list cannot be shown compliant by any container rule.
containers_missing if {
	pod_spec
	not has_containers
}

has_containers if {
	list := pod_spec.containers
	is_array(list)
	count(list) > 0
}

# Where a container is, for messages: `containers[app]`.
where(c) := sprintf("%s[%s]", [c.field, c.name])

# A pod-level or container-level securityContext field, the container's value winning.
effective_security(c, field) := value if {
	value := c.spec.securityContext[field]
} else := pod_spec.securityContext[field] if {
	not has_key(object.get(c.spec, "securityContext", {}), field)
}

has_key(o, k) if _ = o[k]

# Namespace allowlists: an exact name or a prefix ending in `*`.
namespace_allowed(allowed) if {
	some pattern in allowed
	matches_pattern(review.namespace, pattern)
}
