"""deploy/k8s: every manifest is valid Kubernetes (the schemas of kubernetes-validate, offline), lint-clean
YAML (yamllint), and agrees with the service it deploys: real settings, real routes, a grace period
longer than the drain, and autoscaling metrics that the service and the recording rules produce."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from service.explain.settings import ExplainSettings
from service.metrics import Metrics
from service.settings import EXPLAIN, Settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"  # the oldest release the manifests promise to work on (docs/DEPLOY.md)
VARIANTS = ("base", "overlays/gpu", "overlays/student-volume")


def _documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _base() -> list[dict]:
    resources = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())["resources"]
    return [doc for name in resources for doc in _documents(K8S / "base" / name)]


def _render(variant: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed: the overlays are not rendered")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / variant)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def _one(docs: list[dict], kind: str, name: str = "relevance") -> dict:
    [found] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _container(docs: list[dict]) -> dict:
    [container] = _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_yaml_is_lint_clean() -> None:
    config = YamlLintConfig(file=str(K8S / ".yamllint.yaml"))
    files = [*sorted((REPO / "deploy").rglob("*.y*ml")), REPO / "docker-compose.yml"]
    assert len(files) > 10
    problems = [
        f"{f.relative_to(REPO)}:{p.line}: {p.desc}" for f in files for p in linter.run(f.read_text(), config)
    ]
    assert not problems, "\n".join(problems)


def test_base_manifests_are_valid_kubernetes() -> None:
    docs = _base()
    assert {d["kind"] for d in docs} == {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_renders_to_valid_kubernetes(variant: str) -> None:
    docs = _render(variant)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert _container(docs)["image"] == ("relevance:gpu" if variant == "overlays/gpu" else "relevance:cpu")


def test_a_broken_manifest_is_refused() -> None:
    # The check above can fail: a misspelt field and a wrong type are errors.
    deployment = _one(_base(), "Deployment")
    misspelt = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSION, strict=True)
    wrong = {**deployment, "spec": {**deployment["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, KUBERNETES_VERSION, strict=True)


def _settings_variables() -> set[str]:
    prefix = Settings.model_config["env_prefix"]
    names = [n for n in Settings.model_fields if n != EXPLAIN] + list(ExplainSettings.model_fields)
    return {f"{prefix}{name}".upper() for name in names}


def test_deployment_agrees_with_the_service() -> None:
    docs = _base()
    pod = _one(docs, "Deployment")["spec"]["template"]
    container = _container(docs)
    env = _env(container)
    assert set(env) <= _settings_variables(), set(env) - _settings_variables()  # no misspelt variable
    # Probes on routes the app has: liveness /healthz, readiness /readyz.
    from service.app import create_app

    routes = set(create_app(Settings(bundle=REPO / "models" / "absent")).openapi()["paths"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"/readyz", "/healthz"} <= routes
    [port] = container["ports"]
    assert str(port["containerPort"]) == env["RELEVANCE_PORT"]
    # The kill comes after the preStop sleep and the whole drain.
    sleep_s = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["spec"]["terminationGracePeriodSeconds"] > sleep_s + float(env["RELEVANCE_SHUTDOWN_GRACE_S"])
    # Under a CPU quota: no spinning threads, one per core of the limit.
    assert env["RELEVANCE_ORT_ALLOW_SPINNING"] == "false"
    assert env["RELEVANCE_ORT_INTRA_OP_THREADS"] == container["resources"]["limits"]["cpu"]
    # The Service, the PodDisruptionBudget and the HPA point at these pods.
    labels = pod["metadata"]["labels"]
    assert _one(docs, "Service")["spec"]["selector"].items() <= labels.items()
    assert _one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert _one(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == "relevance"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == env["RELEVANCE_PORT"]


def test_gpu_variant_requires_a_gpu_and_the_cuda_provider() -> None:
    container = _container(_render("overlays/gpu"))
    env = _env(container)
    assert env["RELEVANCE_PROVIDER"] == "cuda" and env["RELEVANCE_PROVIDER_STRICT"] == "true"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert set(env) <= _settings_variables()


def test_autoscaling_metrics_are_recorded_from_metrics_the_service_exports() -> None:
    hpa = _one(_base(), "HorizontalPodAutoscaler")
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]}
    assert all(m["type"] == "Pods" for m in hpa["spec"]["metrics"])  # never CPU
    rules = yaml.safe_load((K8S / "prometheus" / "rules.yaml").read_text())
    recorded = {r["record"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    adapter = yaml.safe_load((K8S / "prometheus" / "adapter-values.yaml").read_text())
    exposed = {rule["name"]["as"] for rule in adapter["rules"]["custom"]}
    assert wanted == exposed <= set(recorded)
    exported = {metric.name for metric in Metrics().registry.collect()}
    for expr in recorded.values():
        source = expr.split("(", 1)[1].split("[", 1)[0].removesuffix("_sum")
        assert source in exported, f"{expr}: the service exports no {source}"
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert (
        "./deploy/k8s/prometheus/rules.yaml:/etc/prometheus/rules.yaml:ro"
        in compose["services"]["prometheus"]["volumes"]
    )
