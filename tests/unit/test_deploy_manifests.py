"""The deploy examples and the Dockerfile agree with the server on the facts a rollout needs.

A manifest that is wrong here still applies cleanly and fails only in production (a probe on the
wrong port, a drain cut short by SIGKILL, a pod that runs as the wrong user, HTTP/1 to a gRPC
server), so these tests read the files and check those facts against the server's defaults.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CLOUD_RUN = ROOT / "deploy" / "cloudrun" / "service.yaml"
KUBERNETES = ROOT / "deploy" / "kubernetes" / "voice-agent.yaml"
DOCKERFILE = ROOT / "Dockerfile"

DEFAULTS = Settings()
GRPC_PORT = DEFAULTS.port  # 50051
HTTP_PORT = DEFAULTS.http_port  # 8080
CLOUD_RUN_SIGKILL_AFTER_S = 10  # Cloud Run kills an instance 10 s after SIGTERM
# After DRAIN_SECONDS the server ends what is left and stops with this grace
# (server.main.VoiceAgentServer.drain: `await self.stop(grace=2)`).
STOP_GRACE_S = 2


# --- helpers ---------------------------------------------------------------------------------


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    """name -> value, or the valueFrom mapping for variables that come from elsewhere."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def dockerfile_final_stage() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile's last stage, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    instructions = []
    for line in logical:
        name, *args = line.split(None, 1)
        instructions.append((name.upper(), args[0] if args else ""))
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def dockerfile_useradd() -> tuple[str, int]:
    """Name and uid of the user the image creates (`useradd ... --uid N name`)."""
    match = re.search(
        r"useradd\b[^\n]*?--uid[ =](\d+)[^\n]*?\s([a-z_][a-z0-9_-]*)\s*$",
        DOCKERFILE.read_text(),
        re.M,
    )
    assert match, "the Dockerfile creates no user with an explicit uid"
    return match.group(2), int(match.group(1))


def dockerfile_uid() -> int:
    return dockerfile_useradd()[1]


def dockerfile_user() -> str:
    users = [args.strip() for name, args in dockerfile_final_stage() if name == "USER"]
    assert users, "the final stage has no USER: the server would run as root"
    return users[-1]


@pytest.fixture(scope="module")
def cloud_run() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(CLOUD_RUN.read_text())
    return doc


@pytest.fixture(scope="module")
def kube() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(KUBERNETES.read_text()) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert len(by_kind) == len(docs), "one object of each kind expected"
    return by_kind


def kube_container(kube: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers = kube["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


# --- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile_runs_as_a_non_root_user_with_the_manifests_uid() -> None:
    user = dockerfile_user().split(":")[0]
    name, uid = dockerfile_useradd()
    assert user not in ("root", "0"), f"USER {user}"
    assert user in (name, str(uid)), f"USER {user} is not the user the image creates ({name})"
    assert uid == 10001


def test_dockerfile_has_a_healthcheck_and_exposes_the_ports() -> None:
    stage = dockerfile_final_stage()
    checks = [args for name, args in stage if name == "HEALTHCHECK"]
    assert checks and not checks[-1].strip().upper().startswith("NONE"), "no HEALTHCHECK"
    exposed = {
        int(port.split("/")[0]) for name, args in stage if name == "EXPOSE" for port in args.split()
    }
    assert GRPC_PORT in exposed and HTTP_PORT in exposed, exposed


def test_dockerfile_builds_llama_cpp_for_any_avx2_machine() -> None:
    """The image runs where it was not built: a native llama.cpp build would carry the
    builder's instruction set (and on AMX machines, kernels that crash: llama.cpp#20824)."""
    makefile = (ROOT / "Makefile").read_text()
    version = re.search(r"^LLAMA_CPP_VERSION := (.+)$", makefile, re.M)
    docker = DOCKERFILE.read_text()
    cmake_args = re.search(r'CMAKE_ARGS="([^"]+)"', docker)
    assert version and cmake_args
    flags = cmake_args.group(1).split()
    assert "-DGGML_NATIVE=OFF" in flags and "-DGGML_AVX2=ON" in flags, flags
    assert not any("AVX512" in f or "AMX" in f for f in flags), flags
    assert f"llama-cpp-python=={version.group(1).strip()} " in docker


# --- Cloud Run -------------------------------------------------------------------------------


def test_cloud_run_speaks_http2_to_the_grpc_port(cloud_run: dict[str, Any]) -> None:
    assert cloud_run["apiVersion"] == "serving.knative.dev/v1" and cloud_run["kind"] == "Service"
    container = cloud_run["spec"]["template"]["spec"]["containers"][0]
    # One port; its name h2c makes Cloud Run use cleartext HTTP/2 to the container.
    assert container["ports"] == [{"name": "h2c", "containerPort": GRPC_PORT}]
    # Cloud Run sets $PORT from containerPort itself (setting it is an error).
    assert "PORT" not in env_of(container)
    assert container["image"] == "REGION-docker.pkg.dev/PROJECT/voice-agent/server:latest"


def test_cloud_run_concurrency_matches_max_sessions(cloud_run: dict[str, Any]) -> None:
    spec = cloud_run["spec"]["template"]["spec"]
    env = env_of(spec["containers"][0])
    assert spec["containerConcurrency"] == int(env["MAX_SESSIONS"])


def test_cloud_run_keeps_long_calls_and_cpu(cloud_run: dict[str, Any]) -> None:
    template = cloud_run["spec"]["template"]
    assert template["spec"]["timeoutSeconds"] == 3600
    annotations = template["metadata"]["annotations"]
    assert annotations["run.googleapis.com/cpu-throttling"] == "false"
    assert int(annotations["autoscaling.knative.dev/minScale"]) >= 1
    limits = template["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "2", "memory": "4Gi"}


def test_cloud_run_probes_use_grpc_health_and_the_drain_fits(cloud_run: dict[str, Any]) -> None:
    container = cloud_run["spec"]["template"]["spec"]["containers"][0]
    assert container["startupProbe"]["grpc"]["port"] == GRPC_PORT
    assert container["livenessProbe"]["grpc"]["port"] == GRPC_PORT
    env = env_of(container)
    assert 0 < int(env["DRAIN_SECONDS"]) + STOP_GRACE_S < CLOUD_RUN_SIGKILL_AFTER_S
    assert "secretKeyRef" in env["DATABASE_URL"]


# --- Kubernetes ------------------------------------------------------------------------------


def test_kubernetes_has_the_objects(kube: dict[str, dict[str, Any]]) -> None:
    assert kube["Deployment"]["apiVersion"] == "apps/v1"
    assert kube["Service"]["apiVersion"] == "v1"
    assert kube["HorizontalPodAutoscaler"]["apiVersion"] == "autoscaling/v2"
    labels = kube["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert kube["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert kube["Service"]["spec"]["selector"].items() <= labels.items()
    if "PodDisruptionBudget" in kube:
        assert kube["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= (
            labels.items()
        )


def test_kubernetes_ports_match_the_server(kube: dict[str, dict[str, Any]]) -> None:
    container = kube_container(kube)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": GRPC_PORT, "http-metrics": HTTP_PORT}
    env = env_of(container)
    assert int(env.get("PORT", GRPC_PORT)) == GRPC_PORT
    assert int(env.get("HTTP_PORT", HTTP_PORT)) == HTTP_PORT
    service_ports = {p["port"]: p for p in kube["Service"]["spec"]["ports"]}
    assert set(service_ports) == {GRPC_PORT, HTTP_PORT}
    grpc_port = service_ports[GRPC_PORT]
    assert grpc_port["appProtocol"] == "kubernetes.io/h2c"
    assert grpc_port["targetPort"] in ("grpc", GRPC_PORT)
    assert service_ports[HTTP_PORT]["targetPort"] in ("http-metrics", HTTP_PORT)


def test_kubernetes_probes_use_grpc_health_on_the_grpc_port(
    kube: dict[str, dict[str, Any]],
) -> None:
    container = kube_container(kube)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == GRPC_PORT, probe


def test_kubernetes_drain_fits_in_the_grace_period(kube: dict[str, dict[str, Any]]) -> None:
    pod = kube["Deployment"]["spec"]["template"]["spec"]
    container = kube_container(kube)
    drain = int(env_of(container)["DRAIN_SECONDS"])
    pre_stop = 0
    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if command and command[0] == "sleep":
        pre_stop = int(command[1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain + STOP_GRACE_S
    # The health service reports NOT_SERVING while draining: liveness must outlast the drain,
    # or the kubelet restarts the container in the middle of it.
    liveness = container["livenessProbe"]
    assert (
        liveness["periodSeconds"] * liveness["failureThreshold"] > pre_stop + drain + STOP_GRACE_S
    )


def test_kubernetes_runs_as_the_images_non_root_user(kube: dict[str, dict[str, Any]]) -> None:
    pod = kube["Deployment"]["spec"]["template"]["spec"]
    container = kube_container(kube)
    context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == dockerfile_uid()
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    # With a read-only root, the data dir must be a writable volume.
    data_dir = env_of(container)["VOICE_AGENT_DATA"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert data_dir in mounts and "emptyDir" in volumes[mounts[data_dir]]


def test_kubernetes_env_sizes_sessions_and_shares_campaigns(
    kube: dict[str, dict[str, Any]],
) -> None:
    container = kube_container(kube)
    env = env_of(container)
    assert int(env["MAX_SESSIONS"]) > 0
    assert env["DATABASE_URL"]["secretKeyRef"]["key"]
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_kubernetes_hpa_scales_the_deployment_on_cpu(kube: dict[str, dict[str, Any]]) -> None:
    hpa = kube["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": kube["Deployment"]["metadata"]["name"],
    }
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["metrics"])
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
