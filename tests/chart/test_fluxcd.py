"""The fluxcd/ layout: GitRepository, Kustomization and HelmRelease files hold
the fields their CRDs require, point at things that exist, and the example
session renders with the chart.

No CRD schema package is available offline, so the required fields, enums and
patterns of the Flux v2 CRDs (source v1, kustomize v1, helm v2) are checked
here by hand.
"""

from __future__ import annotations

import re

import yaml

from conftest import FLUXCD, ROOT, helm_install, the_pod, validate_k8s, container, env_of

DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def require(obj: dict, path: str):
    cur = obj
    for part in path.split("."):
        assert isinstance(cur, dict) and part in cur, f"{obj.get('kind')} lacks required field {path}"
        cur = cur[part]
    return cur


def check_meta(obj: dict) -> None:
    name = require(obj, "metadata.name")
    assert DNS_SUBDOMAIN.match(name) and len(name) <= 253, f"bad metadata.name {name!r}"


def check_interval(obj: dict, path: str = "spec.interval") -> None:
    value = require(obj, path)
    assert isinstance(value, str) and DURATION.match(value), f"{path} {value!r} is not a duration"


def check_helmrelease(obj: dict) -> None:
    """helm.toolkit.fluxcd.io/v2 HelmRelease: the CRD's required fields."""
    assert obj["apiVersion"] == "helm.toolkit.fluxcd.io/v2" and obj["kind"] == "HelmRelease"
    check_meta(obj)
    check_interval(obj)
    spec = obj["spec"]
    assert ("chart" in spec) != ("chartRef" in spec), "exactly one of spec.chart and spec.chartRef"
    chart = require(obj, "spec.chart.spec.chart")
    assert isinstance(chart, str) and 1 <= len(chart) <= 2048
    ref = require(obj, "spec.chart.spec.sourceRef")
    assert ref.get("kind") in ("HelmRepository", "GitRepository", "Bucket"), ref
    assert 1 <= len(require(ref, "name")) <= 253
    if "releaseName" in spec:
        assert 1 <= len(spec["releaseName"]) <= 53, "spec.releaseName is at most 53 characters"
    if "reconcileStrategy" in spec["chart"]["spec"]:
        assert spec["chart"]["spec"]["reconcileStrategy"] in ("ChartVersion", "Revision")
    assert isinstance(spec.get("values", {}), dict)


def check_gitrepository(obj: dict) -> None:
    """source.toolkit.fluxcd.io/v1 GitRepository."""
    assert obj["apiVersion"] == "source.toolkit.fluxcd.io/v1" and obj["kind"] == "GitRepository"
    check_meta(obj)
    check_interval(obj)
    url = require(obj, "spec.url")
    assert re.match(r"^(http|https|ssh)://.*$", url), url


def check_kustomization(obj: dict) -> None:
    """kustomize.toolkit.fluxcd.io/v1 Kustomization."""
    assert obj["apiVersion"] == "kustomize.toolkit.fluxcd.io/v1" and obj["kind"] == "Kustomization"
    check_meta(obj)
    check_interval(obj)
    assert isinstance(require(obj, "spec.prune"), bool), "spec.prune is a required boolean"
    ref = require(obj, "spec.sourceRef")
    assert ref.get("kind") in ("OCIRepository", "GitRepository", "Bucket", "ExternalArtifact")
    assert require(ref, "name")


def load(path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_root_kustomization_lists_existing_files_and_keeps_flux_system():
    root = load(FLUXCD / "kustomization.yaml")[0]
    assert root["kind"] == "Kustomization" and root["apiVersion"].startswith("kustomize.config.k8s.io/")
    assert "flux-system" in root["resources"], "flux bootstrap's own manifests must stay listed"
    for r in root["resources"]:
        if r != "flux-system":  # written by `flux bootstrap`
            assert (FLUXCD / r).exists(), r
    assert "sessions" not in root["resources"], "sessions/ belongs to the lab-sessions Kustomization"


def test_sources_and_kustomization_hold_required_fields():
    source = load(FLUXCD / "dozlab-infra-source.yaml")[0]
    check_gitrepository(source)
    ks = load(FLUXCD / "lab-sessions.yaml")[0]
    check_kustomization(ks)
    assert ks["spec"]["sourceRef"]["name"] == source["metadata"]["name"] == "dozlab-infra"
    assert (ROOT / ks["spec"]["path"]).is_dir()


def test_checks_catch_missing_fields():
    ks = load(FLUXCD / "lab-sessions.yaml")[0]
    del ks["spec"]["prune"]
    try:
        check_kustomization(ks)
    except AssertionError as e:
        assert "spec.prune" in str(e)
    else:
        raise AssertionError("a Kustomization without prune passed")


def test_example_session_renders_with_the_chart():
    hr = load(FLUXCD / "sessions" / "session-alice.yaml.example")[0]
    check_helmrelease(hr)
    assert hr["spec"]["chart"]["spec"]["chart"] == "charts/dozlab-session"
    assert (ROOT / hr["spec"]["chart"]["spec"]["chart"] / "Chart.yaml").exists()
    values = hr["spec"]["values"]
    assert "password" not in values["codeServer"]
    objs = helm_install(values, release=hr["spec"]["releaseName"])["objects"]
    validate_k8s(objs)
    assert not [o for o in objs if o["kind"] == "Secret"]
    ref = env_of(container(the_pod(objs), "code-server"))["PASSWORD"]["secretKeyRef"]
    secret = load(FLUXCD / "sessions" / "secret-alice.yaml.example")[0]
    assert ref == {"name": secret["metadata"]["name"], "key": "vscode-password"}
    assert "vscode-password" in secret["stringData"]


def test_sessions_dir_applies_no_example():
    applied = [p for p in (FLUXCD / "sessions").iterdir() if p.suffix in (".yaml", ".yml")]
    assert applied == [], "examples in sessions/ must not end in .yaml (Flux would deploy them)"
