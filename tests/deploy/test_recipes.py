"""Every file under deploy/ checked offline: Kubernetes manifests against the Kubernetes schemas
(kubernetes-validate) and KEDA's CRD schemas, the Compose file against the Compose Specification's
JSON schema, systemd units with `systemd-analyze verify`, the Dockerfile with hadolint; plus the
cross-references a schema cannot see (selectors, names, grace periods, probe paths, the API route
the autoscaler reads)."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from conveyor.autoscaling import QueueSignal
from conveyor.settings import Settings

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMAS = Path(__file__).with_name("schemas")
K8S_VERSION = "1.33"
KEDA_CRDS = {
    "ScaledObject": SCHEMAS / "keda-v2.20.1-scaledobjects.yaml",
    "TriggerAuthentication": SCHEMAS / "keda-v2.20.1-triggerauthentications.yaml",
}
SHUTDOWN_GRACE_S = 30


def manifests() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted((DEPLOY / "kubernetes").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((str(path.relative_to(DEPLOY)), doc))
    return docs


def by_kind(kind: str, folder: str = "kubernetes/") -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for f, d in manifests() if d["kind"] == kind and f.startswith(folder)
            and "alternatives" not in f}


def crd_schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load(KEDA_CRDS[kind].read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v.get("storage")]
    return dict(version["schema"]["openAPIV3Schema"])


def validate(doc: dict[str, Any]) -> None:
    if doc["kind"] in KEDA_CRDS:
        assert doc["apiVersion"] == "keda.sh/v1alpha1"
        jsonschema.validate(doc, crd_schema(doc["kind"]))
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize(("path", "doc"), manifests(), ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_manifest_matches_its_schema(path: str, doc: dict[str, Any]) -> None:
    validate(doc)


def test_schema_check_catches_mistakes() -> None:
    """The checks above can fail: a misspelt field and a wrong type are both refused."""
    worker = by_kind("Deployment")["conveyor-worker"]
    typo = json.loads(json.dumps(worker))
    typo["spec"]["template"]["spec"]["terminationGracePeriod"] = 45
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(typo)
    scaled = json.loads(json.dumps(by_kind("ScaledObject")["conveyor-worker"]))
    scaled["spec"]["maxReplicaCount"] = "twenty"
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_deployments_probe_health_and_outlast_the_shutdown_grace() -> None:
    config = by_kind("ConfigMap")["conveyor-config"]["data"]
    grace = float(config["CONVEYOR_SHUTDOWN_GRACE_S"])
    deployments = by_kind("Deployment")
    worker, api = deployments["conveyor-worker"], deployments["conveyor-api"]
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace + 5
    for deployment, path, port in ((worker, "/health", 3002), (api, "/api/health", 8000)):
        c = _container(deployment)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            get = c[probe]["httpGet"]
            assert get["path"] == path and ports[get["port"]] == port
        assert c["envFrom"] == [{"configMapRef": {"name": "conveyor-config"}}]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= \
            deployment["spec"]["template"]["metadata"]["labels"].items()
    assert Settings().worker_health_port == 3002 and Settings().api_port == 8000


def test_disruption_budgets_services_and_autoscaler_point_at_real_objects() -> None:
    deployments = by_kind("Deployment")
    labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments.items()}
    for pdb in by_kind("PodDisruptionBudget").values():
        assert any(pdb["spec"]["selector"]["matchLabels"].items() <= lab.items() for lab in labels.values())
    api_service = by_kind("Service")["conveyor-api"]
    assert api_service["spec"]["selector"].items() <= labels["conveyor-api"].items()
    scaled = by_kind("ScaledObject")["conveyor-worker"]
    assert scaled["spec"]["scaleTargetRef"]["name"] in deployments
    auths = by_kind("TriggerAuthentication")
    secrets = by_kind("Secret")
    for trigger in scaled["spec"]["triggers"]:
        meta = trigger["metadata"]
        assert meta["valueLocation"] in QueueSignal.__dataclass_fields__
        match = re.fullmatch(r"http://([a-z0-9-]+):(\d+)(/api/autoscaling/queues/[A-Za-z0-9._-]+)", meta["url"])
        assert match, meta["url"]
        assert match.group(1) == api_service["metadata"]["name"]
        assert int(match.group(2)) == api_service["spec"]["ports"][0]["port"]
        auth = auths[trigger["authenticationRef"]["name"]]
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["key"] in secrets[ref["name"]]["stringData"]
    from conveyor.autoscaling.http import router

    assert "/api/autoscaling/queues/{queue}" in {getattr(r, "path", "") for r in router.routes}


# ------------------------------------------------------------------------------------ Compose


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def test_compose_file_matches_the_compose_specification() -> None:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(compose())
    broken = compose()
    broken["services"]["worker"]["stop_grace_period"] = {"seconds": 45}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(broken)


def test_compose_runs_the_example_app_on_persistent_valkey() -> None:
    services = compose()["services"]
    assert set(services) == {"valkey", "worker", "scheduler", "api"}
    valkey = services["valkey"]["command"]
    assert valkey[valkey.index("--appendonly") + 1] == "yes"
    assert valkey[valkey.index("--maxmemory-policy") + 1] == "noeviction"
    assert any(v.endswith(":/data") for v in services["valkey"]["volumes"])
    for name in ("worker", "scheduler", "api"):
        s = services[name]
        assert s["command"][1] == "conveyor.examples:app" and s["environment"]["REDIS_URL"].startswith("redis://valkey:")
        assert s["depends_on"]["valkey"]["condition"] == "service_healthy"
    worker = services["worker"]
    grace = float(worker["environment"]["CONVEYOR_SHUTDOWN_GRACE_S"])
    assert float(worker["stop_grace_period"].removesuffix("s")) > grace
    assert "3002/health" in " ".join(worker["healthcheck"]["test"])
    assert "8000/api/health" in " ".join(services["api"]["healthcheck"]["test"])
    from conveyor.examples import app  # the app every recipe serves

    assert app.queue_configs


# ------------------------------------------------------------------------------------ systemd


UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_unit_structure(unit: Path) -> None:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit.read_text())
    assert parser.sections() == ["Unit", "Service", "Install"]
    service = parser["Service"]
    assert service["ExecStart"].startswith("/") and " conveyor " not in service["ExecStart"]
    assert service["EnvironmentFile"] == "/etc/conveyor/conveyor.env"
    assert service["KillSignal"] == "SIGTERM" and service["User"] == "conveyor"
    if "worker" in unit.name:
        assert float(service["TimeoutStopSec"]) > SHUTDOWN_GRACE_S + 5
    env = dict(line.split("=", 1) for line in (DEPLOY / "systemd" / "conveyor.env").read_text().splitlines()
               if line and not line.startswith("#"))
    assert float(env["CONVEYOR_SHUTDOWN_GRACE_S"]) == SHUTDOWN_GRACE_S
    assert "${CONVEYOR_APP}" in service["ExecStart"] and env["CONVEYOR_APP"] == "conveyor.examples:app"


def _verify(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", *sorted(str(p) for p in folder.glob("*.service"))],
                          capture_output=True, text=True, timeout=60, cwd=folder)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point the units at this installation's conveyor.
    conveyor = Path(sys.executable).with_name("conveyor")
    assert os.access(conveyor, os.X_OK)
    for unit in UNITS:
        text = unit.read_text().replace("/opt/conveyor/.venv/bin/conveyor", str(conveyor))
        (tmp_path / unit.name).write_text(text)
    result = _verify(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.service").write_text("[Service]\nExecStart=conveyor worker app:app\n")
    assert _verify(bad).returncode != 0  # a relative ExecStart is refused: the check can fail


# ------------------------------------------------------------------------------------ Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            out.append((instruction.upper(), args.strip()))
    return out


def test_dockerfile_structure() -> None:
    """No Docker engine runs here, so the image is not built: the file is parsed and checked."""
    steps = dockerfile()
    assert steps[0][0] == "FROM"
    froms = [a for i, a in steps if i == "FROM"]
    assert len(froms) == 2 and " AS build" in froms[0]
    final = steps[[i for i, _ in steps].index("FROM", 1):]
    kinds = dict(final)
    assert kinds["USER"] == "10001"  # the last stage runs unprivileged
    assert json.loads(kinds["ENTRYPOINT"]) == ["conveyor"]
    assert json.loads(kinds["CMD"]) == ["worker", "conveyor.examples:app"]
    assert set(kinds["EXPOSE"].split()) == {"8000", "3002"}
    copied = [a.split()[0] for i, a in steps if i == "COPY" and not a.startswith("--from")]
    assert all((ROOT / p).exists() for p in copied)


@pytest.mark.skipif(shutil.which("hadolint", path=str(Path(sys.executable).parent) + os.pathsep
                                 + os.environ.get("PATH", "")) is None, reason="hadolint not installed")
def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    assert exe is not None
    result = subprocess.run([exe, "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    assert subprocess.run([exe, str(bad)], capture_output=True, timeout=60).returncode != 0
