package sandbox.image_registries

import data.lib.testdata as td
import rego.v1

params := {"allowedRegistries": ["registry.k8s.io", "ghcr.io/acme/", "docker.io/library"]}

test_empty_list_allows_any if {
	spec := td.with_container(td.container_with({"image": "evil.example/x:1"}))
	count(violation) == 0 with input as td.sandbox_input(spec, {"allowedRegistries": []})
}

test_allowed_images_pass if {
	every image in ["registry.k8s.io/pause:3.9", "ghcr.io/acme/agent@sha256:00", "busybox", "python:3.12"] {
		spec := td.with_container(td.container_with({"image": image}))
		count(violation) == 0 with input as td.sandbox_input(spec, params)
	}
}

test_other_registries_are_denied if {
	every image in ["ghcr.io/acmecorp/agent:1", "evil.example/registry.k8s.io/x", "someone/busybox", "localhost:5000/x"] {
		spec := td.with_container(td.container_with({"image": image}))
		every inp in td.all_inputs(spec, params) {
			count(violation) == 1 with input as inp
		}
	}
}

test_missing_image_is_denied if {
	spec := td.with_container(json.remove(td.good_container("app"), ["image"]))
	count(violation) == 1 with input as td.sandbox_input(spec, params)
}
