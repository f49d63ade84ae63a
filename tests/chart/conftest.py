"""Shared helpers for the chart, FluxCD and classroom-output tests.

Everything is rendered by the real Helm v4 engine (helm-python-sdk, Helm's Go
code as a library): `helm_install` is `helm install --dry-run=client` (schema
validation, rendering, NOTES), `render_all` also renders hooks such as the
`helm test` pod. No Kubernetes cluster exists here, so rendered objects are
checked against the Kubernetes JSON schemas (kubernetes-validate).
"""

from __future__ import annotations

import os
import pathlib
import secrets
import subprocess

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "dozlab-session"
FLUXCD = ROOT / "fluxcd"
IMAGES = ROOT / "images"
# The seed deployment guide the chart implements (our own design document,
# kept in the repository so the guide's snippets are tested in any checkout).
GUIDE = ROOT / "docs" / "seed" / "DEPLOYMENT.md"

# The chart declares kubeVersion >=1.27; check the oldest and a recent release.
K8S_VERSIONS = ["1.27.0", "1.35.0"]


def openssl_rand_base64(n: int) -> str:
    """What the guide's `$(openssl rand -base64 N)` produces."""
    import base64

    return base64.b64encode(secrets.token_bytes(n)).decode()


def minimal(session_id: str = "alice-001", user: str = "alice", **extra) -> dict:
    """The guide's minimal configuration, plus extra top-level keys."""
    values = {
        "session": {"id": session_id, "userId": user},
        "rootfs": {"imageUrl": "https://example.com/dozlab-k8s.ext4"},
        "codeServer": {"password": openssl_rand_base64(32)},
    }
    values.update(extra)
    return values


def parse_docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def helm_install(values: dict, release: str = "lab-alice", namespace: str = "default") -> dict:
    """`helm install --dry-run=client`: returns the release (manifest, notes)."""
    cfg = helm.Config(storage_driver="memory", namespace=namespace)
    try:
        rel = cfg.install(str(CHART), release, values, dry_run="client", namespace=namespace)
    finally:
        cfg.close()
    rel["objects"] = parse_docs(rel["manifest"])
    return rel


def render_all(values: dict, release: str = "lab-alice", namespace: str = "default") -> list[dict]:
    """Schema check, then every template (hooks included) rendered and parsed."""
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        out = chart.render(values, name=release, namespace=namespace, is_install=True)
    objs = []
    for name, text in out.items():
        if name.endswith("NOTES.txt"):
            continue
        objs.extend(parse_docs(text))
    return objs


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in by_kind(objs, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def the_pod(objs: list[dict]) -> dict:
    pods = [o for o in by_kind(objs, "Pod") if o["metadata"]["name"].startswith("lab-session-")
            and not o["metadata"]["name"].endswith("-test-ready")]
    assert len(pods) == 1
    return pods[0]


def container(pod: dict, name: str) -> dict:
    for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]:
        if c["name"] == name:
            return c
    raise AssertionError(f"no container {name}")


def env_of(c: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def validate_k8s(objs: list[dict]) -> None:
    """Every object against the Kubernetes schemas, strictly (unknown fields fail)."""
    assert objs
    for version in K8S_VERSIONS:
        for obj in objs:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                raise AssertionError(
                    f"{obj['kind']}/{obj['metadata']['name']} is invalid for Kubernetes {version}: "
                    f"{e.message} at {'/'.join(map(str, e.path))}"
                ) from None


def schema_error(values: dict) -> str:
    """The message `helm install` prints for values the chart refuses."""
    with pytest.raises(helm.HelmError) as info:
        helm_install(values)
    return str(info.value)


@pytest.fixture(scope="session")
def dozlab_bin() -> pathlib.Path:
    """The built `dozlab` binary (scripts/test.d/20-chart.sh builds it)."""
    path = pathlib.Path(os.environ.get("DOZLAB_BIN", ROOT / "target" / "debug" / "dozlab"))
    if not path.exists():
        subprocess.run(["cargo", "build", "--quiet", "--bin", "dozlab"], cwd=ROOT, check=True)
    assert path.exists(), f"no dozlab binary at {path}; run cargo build --bin dozlab"
    return path

