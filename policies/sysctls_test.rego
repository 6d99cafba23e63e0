package sandbox.sysctls

import data.lib.testdata as td
import rego.v1

test_no_sysctls_passes if {
	count(violation) == 0 with input as td.sandbox_input(td.good_pod_spec, {})
}

test_sysctl_is_denied if {
	spec := object.union(td.good_pod_spec, {"securityContext": {"sysctls": [{"name": "net.core.somaxconn", "value": "1024"}]}})
	every inp in td.all_inputs(spec, {"allowedSysctls": ["net.ipv4.tcp_syncookies"]}) {
		violation == {{"msg": "sysctl \"net.core.somaxconn\" is not allowed"}} with input as inp
	}
}

test_safe_sysctl_passes_unless_strict if {
	spec := object.union(td.good_pod_spec, {"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}]}})
	count(violation) == 0 with input as td.sandbox_input(spec, {"allowedSysctls": ["net.ipv4.tcp_syncookies"]})
	count(violation) == 1 with input as td.sandbox_input(spec, {"allowedSysctls": []})
}
