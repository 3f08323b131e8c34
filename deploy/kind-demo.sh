#!/usr/bin/env bash
# End-to-end demo of nats-rollouts on a local kind cluster (needs Docker, kind and kubectl).
#
#   deploy/kind-demo.sh                   # create (or reuse) cluster "nats-rollouts" and run the demo
#   CLUSTER_NAME=x deploy/kind-demo.sh    # another cluster name
#   kind delete cluster --name nats-rollouts   # clean up afterwards
#
# Steps: build the project image and load it into kind; install our CRDs (skipped when Argo
# Rollouts' CRDs are already there); apply deploy/kubernetes (NATS + the four services); apply the
# demo AnalysisTemplate, Rollout and Services (deploy/examples); then update the image and drive
# the canary with kubectl and the `rollouts` CLI, which talks to NATS through a port-forward.
#
# Settings (environment): CLUSTER_NAME (nats-rollouts), DEMO_NAMESPACE (default),
# NATS_LOCAL_PORT (14222), TIMEOUT seconds per wait (300), ROLLOUTS_CLI (the `rollouts` command;
# default: `rollouts` on PATH, else the repository's .venv/bin/rollouts, else the CLI inside the
# image via `docker run --network host`).
set -euo pipefail

# Builtins only up to the tool checks, so a missing tool is reported as such.
script_dir="${BASH_SOURCE[0]%/*}"
[[ "$script_dir" != "${BASH_SOURCE[0]}" ]] || script_dir=.
REPO="$(cd "$script_dir/.." && pwd)"
CLUSTER_NAME="${CLUSTER_NAME:-nats-rollouts}"
DEMO_NAMESPACE="${DEMO_NAMESPACE:-default}"
NATS_LOCAL_PORT="${NATS_LOCAL_PORT:-14222}"
TIMEOUT="${TIMEOUT:-300}"
IMAGE="nats-rollouts:local"
ROLLOUT="rollouts-demo"
SYSTEM_NS="rollouts-system"
PF_PID=""
PF_LOG=""

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

cleanup() {
  if [[ -n "$PF_PID" ]]; then kill "$PF_PID" 2>/dev/null || true; fi
  if [[ -n "$PF_LOG" ]]; then rm -f "$PF_LOG"; fi
}
trap cleanup EXIT

need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH: $2"
}

# --- prerequisites ---------------------------------------------------------------------------
need docker "install Docker (https://docs.docker.com/get-docker/)"
need kind "install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
need kubectl "install kubectl (https://kubernetes.io/docs/tasks/tools/)"
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable ('docker info' failed): start Docker first"

if [[ -n "${ROLLOUTS_CLI:-}" ]]; then
  read -r -a CLI <<<"$ROLLOUTS_CLI"
elif command -v rollouts >/dev/null 2>&1; then
  CLI=(rollouts)
elif [[ -x "$REPO/.venv/bin/rollouts" ]]; then
  CLI=("$REPO/.venv/bin/rollouts")
else
  # Host networking reaches the port-forward on 127.0.0.1 (Linux; elsewhere set ROLLOUTS_CLI).
  CLI=(docker run --rm --network host "$IMAGE")
fi
rollouts() { "${CLI[@]}" --nats "nats://127.0.0.1:${NATS_LOCAL_PORT}" "$@"; }

# --- cluster and image -----------------------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  say "Reusing kind cluster '$CLUSTER_NAME'"
else
  say "Creating kind cluster '$CLUSTER_NAME'"
  kind create cluster --name "$CLUSTER_NAME" --wait 120s
fi
kubectl config use-context "kind-${CLUSTER_NAME}" >/dev/null

say "Building $IMAGE and loading it into the cluster"
docker build -t "$IMAGE" "$REPO"
kind load docker-image "$IMAGE" --name "$CLUSTER_NAME"

# --- CRDs --------------------------------------------------------------------------------------
owner="$(kubectl get crd rollouts.argoproj.io \
  -o jsonpath='{.metadata.labels.app\.kubernetes\.io/part-of}' 2>/dev/null || true)"
if kubectl get crd rollouts.argoproj.io >/dev/null 2>&1 && [[ "$owner" != "nats-rollouts" ]]; then
  say "Argo Rollouts' CRDs are installed: using them (ours are not applied)"
  echo "    If Argo's controller runs in this cluster too, both act on the same Rollouts;"
  echo "    install next to it instead (deploy/README.md, 'Next to Argo Rollouts')."
else
  say "Installing the nats-rollouts CRDs (argoproj.io)"
  kubectl apply -f "$REPO/deploy/crds/argoproj.io.yaml"
  kubectl wait --for condition=Established --timeout=60s \
    crd/rollouts.argoproj.io crd/analysistemplates.argoproj.io crd/clusteranalysistemplates.argoproj.io \
    crd/analysisruns.argoproj.io crd/experiments.argoproj.io
fi

# --- NATS and the services ---------------------------------------------------------------------
say "Applying deploy/kubernetes (namespace $SYSTEM_NS)"
kubectl apply -k "$REPO/deploy/kubernetes"
kubectl -n "$SYSTEM_NS" rollout status statefulset/nats --timeout="${TIMEOUT}s"
for deployment in planner traffic-shifter scaler analyzer; do
  kubectl -n "$SYSTEM_NS" rollout status "deployment/$deployment" --timeout="${TIMEOUT}s"
done

say "Port-forwarding NATS to 127.0.0.1:${NATS_LOCAL_PORT}"
PF_LOG="$(mktemp -t nats-rollouts-port-forward.XXXXXX)"
kubectl -n "$SYSTEM_NS" port-forward svc/nats "${NATS_LOCAL_PORT}:4222" >"$PF_LOG" 2>&1 &
PF_PID=$!
deadline=$((SECONDS + 30))
until (exec 3<>"/dev/tcp/127.0.0.1/${NATS_LOCAL_PORT}") 2>/dev/null; do
  if ! kill -0 "$PF_PID" 2>/dev/null || ((SECONDS > deadline)); then
    cat "$PF_LOG" >&2
    die "the port-forward to NATS did not come up"
  fi
  sleep 0.5
done

# Polls `rollouts status` until its line starts with the phase (Paused, Healthy...).
wait_for_phase() {
  local phase="$1" line="" deadline=$((SECONDS + TIMEOUT))
  while ((SECONDS <= deadline)); do
    line="$(rollouts status "$ROLLOUT" -n "$DEMO_NAMESPACE" 2>/dev/null || true)"
    if [[ "$line" == "$phase"* ]]; then
      echo "    $line"
      return 0
    fi
    sleep 2
  done
  die "rollout $DEMO_NAMESPACE/$ROLLOUT not $phase after ${TIMEOUT}s (last status: ${line:-none})"
}

# --- the demo ------------------------------------------------------------------------------------
say "Applying the demo AnalysisTemplate, Rollout and Services (namespace $DEMO_NAMESPACE)"
kubectl -n "$DEMO_NAMESPACE" apply -f "$REPO/deploy/examples/analysis-template.yaml"
kubectl -n "$DEMO_NAMESPACE" apply -f "$REPO/deploy/examples/canary-rollout.yaml"
say "Waiting for the first version (blue) to be Healthy"
rollouts status "$ROLLOUT" -n "$DEMO_NAMESPACE" --watch --timeout "$TIMEOUT"

say "Updating the image to argoproj/rollouts-demo:yellow (a new revision: the canary starts)"
kubectl -n "$DEMO_NAMESPACE" patch rollout "$ROLLOUT" --type json -p \
  '[{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "argoproj/rollouts-demo:yellow"}]'
wait_for_phase Paused
rollouts get "$ROLLOUT" -n "$DEMO_NAMESPACE"
kubectl -n "$DEMO_NAMESPACE" get replicasets -l app=rollouts-demo

say "Promoting past the manual pause: 60% canary, then the smoke-test analysis (a Job)"
rollouts promote "$ROLLOUT" -n "$DEMO_NAMESPACE"
if rollouts status "$ROLLOUT" -n "$DEMO_NAMESPACE" --watch --timeout "$TIMEOUT"; then
  result="Healthy: yellow is the new stable version"
else
  result="Degraded: the canary was aborted back to blue"
fi

say "Result"
rollouts get "$ROLLOUT" -n "$DEMO_NAMESPACE"
kubectl -n "$DEMO_NAMESPACE" get rollout "$ROLLOUT"
kubectl -n "$DEMO_NAMESPACE" get replicasets,jobs -l 'app in (rollouts-demo, rollouts-demo-smoke)'
echo
echo "$result"
echo "Clean up with: kind delete cluster --name $CLUSTER_NAME"
[[ "$result" == Healthy* ]]
