#!/usr/bin/env bash
# End-to-end test on a kind cluster, for people with Docker (not run in CI: no Docker engine there).
#
#   tests/e2e/kind.sh            # create the cluster, test, delete the cluster
#   KEEP=1 tests/e2e/kind.sh     # keep the cluster afterwards for poking around
#
# Needs docker, kind, kubectl. It builds the image, installs the upstream agent-sandbox CRDs and
# controller, installs sandbox-admission from manifests/ with a certificate made by the binary's
# own `certs` command, then checks that a Sandbox's pod is mutated (runtime class, labels,
# seccomp), that a privileged SandboxTemplate and a Sandbox forging the admission time are denied,
# and that a plain pod in an enforce-mode namespace is isolated.
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=${CLUSTER:-sandbox-admission-e2e}
KIND_NODE_IMAGE=${KIND_NODE_IMAGE:-kindest/node:v1.33.1}
IMAGE_NAME=${IMAGE_NAME:-sandbox-admission}
IMAGE_TAG=${IMAGE_TAG:-e2e}
IMAGE="$IMAGE_NAME:$IMAGE_TAG"
# The upstream controller release to test against (the CRDs in tests/fixtures are v0.5.x).
AGENT_SANDBOX_VERSION=${AGENT_SANDBOX_VERSION:-v0.5.0}
AGENT_SANDBOX_RELEASE=${AGENT_SANDBOX_RELEASE:-https://github.com/kubernetes-sigs/agent-sandbox/releases/download/$AGENT_SANDBOX_VERSION}
NS=sandbox-admission
TEST_NS=sandbox-e2e
WORK=tests/e2e/.work

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done

cleanup() {
  if [[ "${KEEP:-}" == 1 ]]; then
    echo "cluster kept: kind delete cluster --name $CLUSTER"
  else
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

step "kind cluster $CLUSTER ($KIND_NODE_IMAGE)"
kind create cluster --name "$CLUSTER" --image "$KIND_NODE_IMAGE" --wait 120s
kubectl config use-context "kind-$CLUSTER"

step "agent-sandbox CRDs (tests/fixtures) and controller $AGENT_SANDBOX_VERSION"
# Server-side apply: the CRDs are too large for the last-applied annotation.
kubectl apply --server-side -f tests/fixtures/agent-sandbox/crds/
kubectl apply --server-side --force-conflicts -f "$AGENT_SANDBOX_RELEASE/manifest.yaml"
kubectl apply --server-side --force-conflicts -f "$AGENT_SANDBOX_RELEASE/extensions.yaml"
kubectl wait --for=condition=Available deployment --all -n agent-sandbox-system --timeout=180s

step "image $IMAGE"
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

step "serving certificate from the binary's certs command"
rm -rf "$WORK" && mkdir -p "$WORK/certs" "$WORK/install" "$WORK/runtimeclasses"
docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/$WORK/certs:/out" "$IMAGE" \
  certs --service sandbox-admission --namespace "$NS" --out /out \
  --kustomize-patch /out/ca-bundle-patch.yaml >/dev/null
cp "$WORK/certs/ca-bundle-patch.yaml" "$WORK/install/"
kubectl apply -f manifests/base/namespace.yaml
# Only the serving pair and the CA certificate: the CA key stays out of the cluster.
kubectl -n "$NS" create secret generic sandbox-admission-tls --type=kubernetes.io/tls \
  --from-file=tls.crt="$WORK/certs/tls.crt" --from-file=tls.key="$WORK/certs/tls.key" \
  --from-file=ca.crt="$WORK/certs/ca.crt"

step "RuntimeClasses with the runc handler"
# kind nodes have no gVisor or Kata: the RuntimeClass objects keep their names (what the webhook
# injects and the policies allow) but point at runc, so the pods can start and be inspected.
cat > "$WORK/runtimeclasses/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../../../manifests/runtimeclasses
patches:
  - target: {group: node.k8s.io, kind: RuntimeClass}
    patch: |-
      - op: replace
        path: /handler
        value: runc
YAML
kubectl apply -k "$WORK/runtimeclasses"

step "sandbox-admission from manifests/ (caBundle and image patched in)"
# The same overlay an operator writes when using the certs command (docs/deployment.md).
cat > "$WORK/install/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../../../manifests
images:
  - name: sandbox-admission
    newName: $IMAGE_NAME
    newTag: "$IMAGE_TAG"
patches:
  # Written by the certs command: the caBundle on every webhook of both configurations.
  - path: ca-bundle-patch.yaml
YAML
kubectl apply -k "$WORK/install"
kubectl -n "$NS" rollout status deployment/sandbox-admission --timeout=180s

step "a Sandbox's pod is mutated"
kubectl create namespace "$TEST_NS"
# The Sandbox meets the default policies, which also apply to the Sandbox object itself (runtime
# class, non-root, limits, no token). Seccomp, the labels and the NetworkPolicy come from the
# webhook.
kubectl apply -f - <<YAML
apiVersion: agents.x-k8s.io/v1beta1
kind: Sandbox
metadata:
  name: hello
  namespace: $TEST_NS
spec:
  podTemplate:
    spec:
      runtimeClassName: gvisor
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
      containers:
        - name: main
          image: busybox:1.36
          command: ["sleep", "3600"]
          resources:
            limits: {cpu: 100m, memory: 64Mi}
          securityContext:
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
YAML
for _ in $(seq 1 60); do
  kubectl -n "$TEST_NS" get pod hello >/dev/null 2>&1 && break
  sleep 2
done
kubectl -n "$TEST_NS" wait --for=condition=Ready pod/hello --timeout=180s
pod() { kubectl -n "$TEST_NS" get pod hello -o jsonpath="$1"; }
runtime=$(pod '{.spec.runtimeClassName}')
[[ "$runtime" == gvisor ]] || fail "runtimeClassName is '$runtime', want gvisor"
seccomp=$(pod '{.spec.securityContext.seccompProfile.type}')
[[ "$seccomp" == RuntimeDefault ]] || fail "pod seccompProfile is '$seccomp', want RuntimeDefault"
profile=$(pod '{.metadata.labels.sandbox-admission\.io/network-profile}')
[[ -n "$profile" ]] || fail "no sandbox-admission.io/network-profile label: $(pod '{.metadata.labels}')"
kubectl -n "$TEST_NS" get networkpolicy "sandbox-admission-$profile" >/dev/null \
  || fail "the $profile network profile's NetworkPolicy was not created in $TEST_NS"
echo "pod hello: runtimeClassName=$runtime seccomp=$seccomp network-profile=$profile"

step "a Sandbox pod without a runtime class gets the default profile's"
# Labelled like the controller labels Sandbox pods; mutation runs before validation, so the
# runtime-class policy sees the injected class.
kubectl apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: defaulted
  namespace: $TEST_NS
  labels:
    agents.x-k8s.io/sandbox-name-hash: 0badc0de
spec:
  automountServiceAccountToken: false
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
  containers:
    - name: main
      image: busybox:1.36
      command: ["sleep", "3600"]
      resources:
        limits: {cpu: 100m, memory: 64Mi}
      securityContext:
        allowPrivilegeEscalation: false
        capabilities: {drop: [ALL]}
YAML
defaulted=$(kubectl -n "$TEST_NS" get pod defaulted -o jsonpath='{.spec.runtimeClassName}')
[[ "$defaulted" == gvisor ]] || fail "runtimeClassName is '$defaulted', want gvisor (the default profile)"
echo "pod defaulted: runtimeClassName=$defaulted"

step "a privileged SandboxTemplate is denied"
set +e
denied=$(kubectl apply -f - 2>&1 <<YAML
apiVersion: extensions.agents.x-k8s.io/v1beta1
kind: SandboxTemplate
metadata:
  name: privileged
  namespace: $TEST_NS
spec:
  podTemplate:
    spec:
      containers:
        - name: main
          image: busybox:1.36
          securityContext:
            privileged: true
YAML
)
status=$?
set -e
[[ $status -ne 0 ]] || fail "the privileged SandboxTemplate was admitted"
grep -q 'denied the request' <<<"$denied" || fail "unexpected error: $denied"
echo "$denied"

step "a Sandbox that pre-sets the webhook's bookkeeping is denied, naming the key"
set +e
forged=$(kubectl apply -f - 2>&1 <<YAML
apiVersion: agents.x-k8s.io/v1beta1
kind: Sandbox
metadata:
  name: forged
  namespace: $TEST_NS
spec:
  podTemplate:
    metadata:
      annotations:
        sandbox-admission.io/admitted-at: "2030-01-01T00:00:00Z"
    spec:
      runtimeClassName: gvisor
      containers:
        - name: main
          image: busybox:1.36
YAML
)
status=$?
set -e
[[ $status -ne 0 ]] || fail "the Sandbox forging admitted-at was admitted"
grep -q 'sandbox-reserved-metadata' <<<"$forged" || fail "unexpected error: $forged"
echo "$forged"

step "enforce mode: a pod with no Sandbox marks is isolated"
# The kube-apiserver evaluates the webhooks' matchConditions and namespaceSelector here.
kubectl create namespace "$TEST_NS-enforce"
kubectl label namespace "$TEST_NS-enforce" sandbox-admission.io/isolation=enforce
kubectl apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: plain
  namespace: $TEST_NS-enforce
spec:
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
  containers:
    - name: main
      image: busybox:1.36
      command: ["sleep", "3600"]
      resources:
        limits: {cpu: 100m, memory: 64Mi}
YAML
enforced=$(kubectl -n "$TEST_NS-enforce" get pod plain -o jsonpath='{.spec.runtimeClassName}')
[[ "$enforced" == gvisor ]] || fail "runtimeClassName is '$enforced' in an enforce namespace, want gvisor"
echo "pod plain (enforce namespace): runtimeClassName=$enforced"

step "the background audit reports what already runs"
# A warm pool whose template does not exist is admitted with a warning
# (warmpool-template-exists); the audit finds it again and writes it into the namespace's
# PolicyReport. The audit is off by default: turn it on with its flags' environment variables.
kubectl apply -f - <<YAML
apiVersion: extensions.agents.x-k8s.io/v1beta1
kind: SandboxWarmPool
metadata:
  name: orphan-pool
  namespace: $TEST_NS
spec:
  replicas: 0
  sandboxTemplateRef:
    name: no-such-template
YAML
kubectl -n "$NS" set env deployment/sandbox-admission \
  SANDBOX_ADMISSION_AUDIT=true SANDBOX_ADMISSION_AUDIT_INTERVAL_SECONDS=10
kubectl -n "$NS" rollout status deployment/sandbox-admission --timeout=180s
report=""
for _ in $(seq 1 60); do
  report=$(kubectl -n "$TEST_NS" get policyreport sandbox-admission -o json 2>/dev/null || true)
  grep -q '"orphan-pool"' <<<"$report" && break
  sleep 2
done
grep -q '"orphan-pool"' <<<"$report" || fail "no PolicyReport result for orphan-pool in $TEST_NS: $report"
grep -q '"warmpool-template-exists"' <<<"$report" || fail "orphan-pool's result names another policy: $report"
holder=$(kubectl -n "$NS" get lease sandbox-admission-audit -o jsonpath='{.spec.holderIdentity}')
[[ -n "$holder" ]] || fail "no replica holds the audit Lease"
kubectl -n "$TEST_NS" get policyreport sandbox-admission
echo "audit Lease held by $holder"

step "PASS"
