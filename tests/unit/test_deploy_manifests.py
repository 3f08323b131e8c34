"""The deployment artefacts under deploy/ and compose.yaml, checked offline.

Covers: every Kubernetes object under deploy/ against the Kubernetes 1.30 OpenAPI schemas in strict
mode (kubernetes-validate), including the pod template of the example Rollout and the Job of its
job metric (our own kinds are checked against the generated CRDs in test_crds.py, KEDA's are
skipped: no schema offline); least-privilege RBAC pinned rule by rule; the services' Deployments
(image, command, NATS URL, security context, probes, replicas); NATS (JetStream store on the PVC,
Services); the KEDA ScaledObject against the manifests and shared.subjects; both kustomizations
(rendered with `kubectl kustomize` when kubectl exists); kind-demo.sh; compose.yaml (with
`docker compose config` when a Compose client exists).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from services.cli.main import _parser
from services.cli.processes import SERVICES
from shared import subjects
from shared.specs import Rollout, load_documents

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "kubernetes"
OVERLAY = DEPLOY / "next-to-argo"
KUBERNETES_VERSION = "1.30"
NAMESPACE = "rollouts-system"
IMAGE = "nats-rollouts:local"
NATS_URL = "nats://nats.rollouts-system:4222"
PART_OF = {"app.kubernetes.io/part-of": "nats-rollouts"}
# Kinds with no schema offline: their consistency is checked field by field below.
THIRD_PARTY_GROUPS = {"keda.sh": "KEDA's CRDs are not bundled with kubernetes-validate"}
# Ours: validated against the generated CRD schema in tests/unit/test_crds.py.
OUR_GROUP = "argoproj.io"
KUSTOMIZE_GROUP = "kustomize.config.k8s.io"

# (apiGroup, resource, verb) triples each service may use: exactly these, nothing else.
EXPECTED_RULES: dict[str, set[tuple[str, str, str]]] = {
    "planner": {
        *(("argoproj.io", "rollouts", v) for v in ("get", "list", "watch")),
        *(("argoproj.io", "rollouts/status", v) for v in ("get", "update", "patch")),
        *(
            ("argoproj.io", r, v)
            for r in ("analysistemplates", "clusteranalysistemplates")
            for v in ("get", "list", "watch")
        ),
        ("", "events", "create"),
    },
    "scaler": {
        *(
            ("apps", "replicasets", v)
            for v in ("get", "list", "watch", "create", "update", "patch", "delete")
        ),
        *(("apps", "replicasets/scale", v) for v in ("get", "update", "patch")),
        *(("", "services", v) for v in ("get", "list", "watch", "patch")),
        ("", "pods", "list"),
        ("", "pods", "delete"),
        ("argoproj.io", "rollouts", "get"),
    },
    "traffic-shifter": {
        *(
            ("networking.istio.io", r, v)
            for r in ("virtualservices", "destinationrules")
            for v in ("get", "list", "watch", "update", "patch")
        ),
        *(
            ("networking.k8s.io", "ingresses", v)
            for v in ("get", "list", "watch", "create", "update", "patch", "delete")
        ),
        *(
            ("gateway.networking.k8s.io", "httproutes", v)
            for v in ("get", "list", "watch", "update", "patch")
        ),
        *(
            ("split.smi-spec.io", "trafficsplits", v)
            for v in ("get", "list", "watch", "create", "update", "patch")
        ),
        ("", "services", "get"),
        ("argoproj.io", "rollouts", "get"),
    },
    "analyzer": {
        *(("batch", "jobs", v) for v in ("get", "list", "watch", "create", "delete")),
        ("", "secrets", "get"),
    },
}


def load_yaml(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*.yaml") if p.is_file())


def base_objects() -> list[dict[str, Any]]:
    kustomization = load_yaml(BASE / "kustomization.yaml")[0]
    return [doc for name in kustomization["resources"] for doc in load_yaml(BASE / name)]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def group_of(obj: dict[str, Any]) -> str:
    api_version = str(obj["apiVersion"])
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def env_of(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", [])}


def validate(obj: dict[str, Any], where: str) -> None:
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{where}: {obj['kind']}/{obj['metadata'].get('name')}: {path}: {exc.message}")
    except kubernetes_validate.SchemaNotFoundError:
        # A kind without a bundled schema must be listed in THIRD_PARTY_GROUPS, not pass silently.
        pytest.fail(
            f"{where}: no Kubernetes {KUBERNETES_VERSION} schema for {obj['apiVersion']} {obj['kind']}"
        )


# --- every manifest against the Kubernetes schemas ----------------------------------------------


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_manifest_validates_against_kubernetes_schemas(path: Path) -> None:
    docs = load_yaml(path)
    assert docs, f"{path} holds no object"
    for doc in docs:
        group = group_of(doc)
        if group == OUR_GROUP:
            # Checked against the generated CRD schema by test_crds.py, which reads deploy/examples.
            assert path.parent == DEPLOY / "examples", f"{path}: {doc['kind']} outside deploy/examples"
        elif group not in THIRD_PARTY_GROUPS and group != KUSTOMIZE_GROUP:
            validate(doc, str(path.relative_to(ROOT)))


def test_the_validator_really_rejects() -> None:
    planner = find(base_objects(), "Deployment", "planner")
    bad = yaml.safe_load(yaml.safe_dump(planner))
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


def test_example_pod_templates_and_jobs_validate() -> None:
    """Free-form parts of our kinds are Kubernetes objects: the pod template and job metrics' Jobs."""
    checked = Counter[str]()
    for path in sorted((DEPLOY / "examples").glob("*.yaml")):
        for spec, doc in zip(load_documents(path.read_text()), load_yaml(path), strict=True):
            where = str(path.relative_to(ROOT))
            if isinstance(spec, Rollout):
                template = doc["spec"]["template"]
                validate(
                    {
                        "apiVersion": "v1",
                        "kind": "PodTemplate",
                        "metadata": {"name": "t"},
                        "template": template,
                    },
                    where,
                )
                checked["pod template"] += 1
            for metric in (doc.get("spec") or {}).get("metrics") or []:
                job = (metric.get("provider") or {}).get("job")
                if job:
                    obj = {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "metadata": {"name": "j"},
                        "spec": job["spec"],
                    }
                    validate(obj, where)
                    checked["job"] += 1
    assert checked == {"pod template": 1, "job": 1}


# --- RBAC ------------------------------------------------------------------------------------------


def test_rbac_has_no_wildcards() -> None:
    text = (BASE / "rbac.yaml").read_text()
    for doc in load_yaml(BASE / "rbac.yaml"):
        for rule in doc.get("rules", []):
            for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert not any("*" in value for value in rule.get(key, [])), (doc["metadata"]["name"], rule)
    assert re.search(r"[\"']\*[\"']|\[\s*\*", text) is None


@pytest.mark.parametrize("service", sorted(EXPECTED_RULES))
def test_each_service_has_exactly_its_rules(service: str) -> None:
    objects = load_yaml(BASE / "rbac.yaml")
    role = find(objects, "ClusterRole", f"nats-rollouts-{service}")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == EXPECTED_RULES[service]
    assert all(set(rule) == {"apiGroups", "resources", "verbs"} for rule in role["rules"])
    binding = find(objects, "ClusterRoleBinding", f"nats-rollouts-{service}")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": f"nats-rollouts-{service}",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": service, "namespace": NAMESPACE}]
    account = find(objects, "ServiceAccount", service)
    assert account["metadata"]["namespace"] == NAMESPACE


def test_rbac_objects_are_exactly_one_set_per_service() -> None:
    kinds = Counter(d["kind"] for d in load_yaml(BASE / "rbac.yaml"))
    assert kinds == {"ServiceAccount": 4, "ClusterRole": 4, "ClusterRoleBinding": 4}


# --- the services ------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_service_deployment(service: str) -> None:
    objects = base_objects()
    deployment = find(objects, "Deployment", service)
    assert deployment["metadata"]["namespace"] == NAMESPACE
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == service
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert PART_OF.items() <= deployment["metadata"]["labels"].items()
    c = container(deployment)
    assert c["image"] == IMAGE and c["imagePullPolicy"] == "IfNotPresent"
    assert c["args"] == ["run", service, "--platform", "kubernetes"]
    env = env_of(c)
    assert env["NATS_URL"] == NATS_URL
    assert env["ROLLOUTS_API_GROUP"] == "argoproj.io"
    for kind in ("requests", "limits"):
        assert set(c["resources"][kind]) >= {"cpu", "memory"}, (service, kind)
    # Pod Security "restricted" (enforced on the namespace).
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # Writable paths are volumes, since the root filesystem is read-only.
    volumes = {v["name"] for v in pod.get("volumes", [])}
    assert {m["name"] for m in c.get("volumeMounts", [])} <= volumes


def run_platforms() -> tuple[str, ...]:
    """The --platform choices of `rollouts run`, read from the real parser."""
    for action in _parser()._subparsers._group_actions:
        run = action.choices["run"]
        for option in run._actions:
            if "--platform" in option.option_strings:
                return tuple(option.choices or ())
    return ()


@pytest.mark.xfail(
    "kubernetes" not in run_platforms(),
    reason="services/cli/main.py does not offer `rollouts run --platform kubernetes` yet",
    strict=True,
)
def test_service_commands_parse_with_the_real_cli() -> None:
    for service in SERVICES:
        c = container(find(base_objects(), "Deployment", service))
        try:
            args = _parser().parse_args(c["args"])
        except SystemExit:
            pytest.fail(f"`rollouts {' '.join(c['args'])}` is rejected by services/cli/main.py")
        assert (args.cmd, args.service, args.platform) == ("run", service, "kubernetes")


def test_replicas_and_update_strategies() -> None:
    objects = base_objects()
    replicas = {s: find(objects, "Deployment", s)["spec"]["replicas"] for s in SERVICES}
    assert replicas == {"planner": 2, "traffic-shifter": 1, "analyzer": 2, "scaler": 1}
    for single in ("scaler", "traffic-shifter"):  # two at once would act twice on the same objects
        assert find(objects, "Deployment", single)["spec"]["strategy"] == {"type": "Recreate"}


def test_traffic_shifter_probes_reach_its_admin_server() -> None:
    objects = base_objects()
    c = container(find(objects, "Deployment", "traffic-shifter"))
    env = env_of(c)
    assert env["ROLLOUTS_PROXY_HOST"] == "0.0.0.0"  # the kubelet probes the pod IP
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"admin": int(env["ROLLOUTS_ADMIN_PORT"])} == {"admin": 9465}
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "admin"}
    service = find(objects, "Service", "traffic-shifter")
    assert service["spec"]["ports"] == [{"name": "admin", "port": 9465, "targetPort": "admin"}]
    pod_labels = find(objects, "Deployment", "traffic-shifter")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_analyzer_drains_longer_than_its_measurements() -> None:
    pod = find(base_objects(), "Deployment", "analyzer")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 45  # see keda-scaledobject.yaml


def test_namespace_enforces_restricted_pod_security() -> None:
    namespace = find(base_objects(), "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    namespaced = [
        o for o in base_objects() if o["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding")
    ]
    assert {o["metadata"]["namespace"] for o in namespaced} == {NAMESPACE}


# --- NATS ----------------------------------------------------------------------------------------


def test_nats_statefulset_keeps_jetstream_on_its_volume() -> None:
    objects = base_objects()
    sts = find(objects, "StatefulSet", "nats")
    conf = find(objects, "ConfigMap", "nats-config")["data"]["nats.conf"]
    store = re.search(r"store_dir:\s*(\S+)", conf)
    assert store is not None and "jetstream {" in conf
    assert re.search(r"^http:\s*0\.0\.0\.0:8222$", conf, re.M), "monitoring port (probes, KEDA)"
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == store.group(1)
    assert c["args"] == ["--config", f"{mounts['config']}/nats.conf"]
    headless = find(objects, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz?js-enabled-only=true"


def test_nats_url_names_the_client_service() -> None:
    objects = base_objects()
    host, port = NATS_URL.removeprefix("nats://").split(":")
    name, namespace = host.split(".")
    service = find(objects, "Service", name)
    assert service["metadata"]["namespace"] == namespace
    sts = find(objects, "StatefulSet", "nats")
    assert service["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert ports == {"client": int(port), "monitor": 8222}


# --- KEDA ----------------------------------------------------------------------------------------


def test_keda_scaledobject_matches_the_manifests() -> None:
    keda = load_yaml(DEPLOY / "keda-scaledobject.yaml")
    objects = base_objects()
    scaled = find(keda, "ScaledObject", "analyzer")
    assert scaled["metadata"]["namespace"] == NAMESPACE
    target = find(objects, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    assert target["metadata"]["namespace"] == NAMESPACE
    (trigger,) = scaled["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "nats-jetstream"
    assert meta["stream"] == subjects.ANALYSIS_WORK_STREAM
    assert meta["consumer"] == subjects.ANALYZER_CONSUMER
    host, port = meta["natsServerMonitoringEndpoint"].split(":")
    service, namespace = host.split(".")[:2]
    assert host == f"{service}.{namespace}.svc.cluster.local"
    nats = find(objects, "Service", service)
    assert nats["metadata"]["namespace"] == namespace
    assert int(port) in {p["port"] for p in nats["spec"]["ports"]}
    auth = find(keda, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    secret = find(keda, "Secret", auth["spec"]["secretTargetRef"][0]["name"])
    assert secret["stringData"]["monitoringEndpoint"] == meta["natsServerMonitoringEndpoint"]
    assert {o["metadata"]["namespace"] for o in keda} == {NAMESPACE}


# --- kustomize -----------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    kustomization = load_yaml(BASE / "kustomization.yaml")[0]
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk


def kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not on PATH: `kubectl kustomize` cannot render the kustomization")
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def test_kustomize_renders_the_base_unchanged() -> None:
    rendered = {key(o): o for o in kustomize(BASE)}
    assert rendered == {key(o): o for o in base_objects()}


def test_next_to_argo_overlay_moves_everything_to_its_group() -> None:
    base = {key(o): o for o in base_objects()}
    overlay = {key(o): o for o in kustomize(OVERLAY)}
    assert overlay.keys() == base.keys()
    changed = {k for k in base if base[k] != overlay[k]}
    assert changed == {("Deployment", NAMESPACE, s) for s in SERVICES} | {
        ("ClusterRole", "", f"nats-rollouts-{s}") for s in ("planner", "scaler", "traffic-shifter")
    }
    for service in SERVICES:
        assert env_of(container(overlay[("Deployment", NAMESPACE, service)]))["ROLLOUTS_API_GROUP"] == (
            "rollouts.nats.io"
        )
    for service, expected in EXPECTED_RULES.items():
        role = overlay[("ClusterRole", "", f"nats-rollouts-{service}")]
        granted = {
            (g, r, v)
            for rule in role["rules"]
            for g in rule["apiGroups"]
            for r in rule["resources"]
            for v in rule["verbs"]
        }
        moved = {("rollouts.nats.io" if g == "argoproj.io" else g, r, v) for g, r, v in expected}
        assert granted == moved, service


# --- kind demo -----------------------------------------------------------------------------------


def test_kind_demo_script() -> None:
    script = DEPLOY / "kind-demo.sh"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert script.stat().st_mode & 0o111, "kind-demo.sh must be executable"
    for tool in ("docker", "kind", "kubectl"):
        assert f"need {tool} " in text, f"no check for {tool}"
    done = subprocess.run(
        ["bash", "-n", str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    for ref in re.findall(r"\$REPO/([\w./-]+)", text):
        assert (ROOT / ref).exists(), f"kind-demo.sh refers to missing {ref}"
    assert "deploy/crds/argoproj.io.yaml" in text and "deploy/examples/canary-rollout.yaml" in text


def test_kind_demo_reports_missing_tools(tmp_path: Path) -> None:
    """With an empty PATH (bash only), the script stops at once naming the missing tool."""
    bash = shutil.which("bash")
    assert bash is not None
    done = subprocess.run(
        [bash, str(DEPLOY / "kind-demo.sh")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": str(tmp_path), "HOME": str(tmp_path)},
    )
    assert done.returncode == 1
    assert "error: 'docker' not found on PATH: install Docker" in done.stderr


# --- compose.yaml --------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def test_compose_services_and_scaling() -> None:
    services = compose()["services"]
    assert set(services) == {"nats", *SERVICES}
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        if name != "nats":
            assert service["command"][:2] == ["run", name], name
    analyzer = services["analyzer"]
    # `docker compose up --scale analyzer=3` needs no fixed name and no fixed host port.
    assert "container_name" not in analyzer and "ports" not in analyzer
    assert not any("container_name" in s for s in services.values())


def compose_command() -> list[str]:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy and subprocess.run([legacy, "version"], capture_output=True, timeout=30).returncode == 0:
        return [legacy]
    pytest.skip("no Compose client: `docker compose version` and `docker-compose version` both unavailable")


def test_docker_compose_config_accepts_the_file() -> None:
    command = compose_command()
    done = subprocess.run(
        [*command, "-f", str(ROOT / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
