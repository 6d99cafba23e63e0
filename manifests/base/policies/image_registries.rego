package sandbox.image_registries

import data.lib.sandbox as lib
import rego.v1

allowed := object.get(input.parameters, "allowedRegistries", [])

# `busybox` → `docker.io/library/busybox`, `org/app` → `docker.io/org/app`.
normalize(image) := image if {
	first := split(image, "/")[0]
	count(split(image, "/")) > 1
	registry_like(first)
}

normalize(image) := concat("/", ["docker.io", image]) if {
	parts := split(image, "/")
	count(parts) > 1
	not registry_like(parts[0])
}

normalize(image) := concat("/", ["docker.io/library", image]) if {
	count(split(image, "/")) == 1
}

registry_like(host) if contains(host, ".")

registry_like(host) if contains(host, ":")

registry_like(host) if host == "localhost"

# An entry names a registry or repository prefix; it matches whole path components only.
matches(image, entry) if {
	prefix := trim_suffix(entry, "/")
	startswith(normalize(image), concat("", [prefix, "/"]))
}

violation contains {"msg": sprintf("%s: image %q is not from an allowed registry %v", [lib.where(c), image, allowed])} if {
	count(allowed) > 0
	some c in lib.containers
	image := object.get(c.spec, "image", "")
	not any_match(image)
}

any_match(image) if {
	image != ""
	some entry in allowed
	matches(image, entry)
}

violation contains {"msg": "pod spec has no containers; images cannot be checked"} if {
	count(allowed) > 0
	lib.containers_missing
}
