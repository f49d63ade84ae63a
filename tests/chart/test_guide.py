"""Every deployment-guide scenario, as written, installs and validates."""

from __future__ import annotations

import copy

import helm_python as helm
import yaml

import guide
from conftest import (
    CHART,
    container,
    env_of,
    helm_install,
    minimal,
    one,
    render_all,
    the_pod,
    validate_k8s,
)
from test_fluxcd import check_helmrelease


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def test_chart_lints_clean_with_the_guide_values():
    report = helm.lint(str(CHART), minimal(), strict=True, kube_version="v1.35.0")
    errors = [m for m in report["messages"] if m["severity"] >= 2]
    assert not errors and not report["errors"], report


def test_chart_lints_clean_with_its_ci_values():
    values = yaml.safe_load((CHART / "ci" / "quickstart-values.yaml").read_text())
    report = helm.lint(str(CHART), values, strict=True, kube_version="v1.27.0")
    assert not [m for m in report["messages"] if m["severity"] >= 2] and not report["errors"], report


def test_quick_start_helm_install_as_written():
    release, sets = guide.quick_start()
    values: dict = {}
    for s in sets:
        values = deep_merge(values, helm.parse_set_string(s))
    rel = helm_install(values, release=release)
    assert release == "lab-session-1764097268"
    objs = rel["objects"]
    validate_k8s(objs + render_all(values, release=release))
    pod = the_pod(objs)
    assert pod["metadata"]["name"] == "lab-session-session-1764097268"
    assert one(objs, "Secret")["metadata"]["name"] == "lab-session-session-1764097268-secrets"
    assert one(objs, "Service")["metadata"]["name"] == "lab-service-session-1764097268"
    assert "EPHEMERAL" in rel["notes"] and "port-forward" in rel["notes"]


def test_minimal_configuration_block():
    values = guide.yaml_block('id: "unique-session-id"')
    objs = helm_install(values)["objects"]
    validate_k8s(objs)
    assert the_pod(objs)["metadata"]["labels"]["user-id"] == "user-identifier"


def test_resource_tuning_block():
    values = deep_merge(minimal(), guide.yaml_block("cpuCount: \"2\""))
    objs = helm_install(values)["objects"]
    validate_k8s(objs)
    vm = container(the_pod(objs), "firecracker-vm")
    assert vm["resources"]["limits"]["memory"] == "3Gi"
    assert vm["resources"]["limits"]["cpu"] == "2000m"
    assert env_of(vm)["CPU_COUNT"] == "2" and env_of(vm)["MEMORY"] == "2048"
    vols = {v["name"]: v for v in the_pod(objs)["spec"]["volumes"]}
    assert vols["vm-data"]["emptyDir"]["sizeLimit"] == "10Gi"


def test_fluxcd_method_2_session_values():
    doc = yaml.safe_load(guide.heredoc("cat > fluxcd/sessions/session-alice.yaml <<EOF", {}))
    check_helmrelease(doc)
    assert doc["spec"]["chart"]["spec"]["sourceRef"]["name"] == "dozlab-infra"
    objs = helm_install(doc["spec"]["values"], release="lab-session-alice-001")["objects"]
    validate_k8s(objs)
    assert the_pod(objs)["metadata"]["name"] == "lab-session-alice-001"


def test_classroom_loop_values_and_labels():
    for student in ["alice", "bob", "charlie"]:
        doc = yaml.safe_load(guide.heredoc("cat > fluxcd/sessions/session-$student.yaml <<EOF",
                                           {"student": student}))
        values = doc["spec"]["values"]
        objs = helm_install(values, release=f"lab-session-{student}")["objects"]
        validate_k8s(objs)
        labels = the_pod(objs)["metadata"]["labels"]
        # `kubectl get pods -l course=kubernetes-101` and `-l user-id=...` select it.
        assert labels["course"] == "kubernetes-101" and labels["cohort"] == "2024-spring"
        assert labels["user-id"] == student and labels["app"] == "lab-environment"
        assert labels["session-id"] == f"{student}-001"


def test_classroom_loop_as_written_lacks_the_required_interval():
    """The guide's loop omits spec.interval, which HelmRelease v2 requires:
    `dozlab classroom render` is the fixed version (see test_classroom.py)."""
    doc = yaml.safe_load(guide.heredoc("cat > fluxcd/sessions/session-$student.yaml <<EOF",
                                       {"student": "alice"}))
    try:
        check_helmrelease(doc)
    except AssertionError as e:
        assert "interval" in str(e)
    else:
        raise AssertionError("the guide's classroom HelmRelease unexpectedly passed")


def test_lab_types():
    for kind, snippet in guide.lab_types().items():
        values = deep_merge(minimal(session_id=f"{kind}-lab"), snippet)
        objs = helm_install(values)["objects"]
        validate_k8s(objs)
        vm = env_of(container(the_pod(objs), "firecracker-vm"))
        init = env_of(container(the_pod(objs), "init-rootfs"))
        assert vm["MEMORY"] == snippet["firecracker"]["vm"]["memory"]
        assert vm["CPU_COUNT"] == snippet["firecracker"]["vm"]["cpuCount"]
        assert init["IMAGE_DOWNLOAD_URL"] == snippet["rootfs"]["imageUrl"]


def test_migration_values_file():
    values = yaml.safe_load(guide.heredoc(
        "cat > my-session-values.yaml <<EOF",
        {"SESSION_ID": "my-session", "ROOTFS_URL": "https://example.com/rootfs.ext4"}))
    objs = helm_install(values, release="lab-my-session")["objects"]
    validate_k8s(objs)
    assert the_pod(objs)["metadata"]["name"] == "lab-session-my-session"


def test_sealed_secret_existing_secret_reference():
    block = guide.block_containing("bash", "existingSecret: vscode-password")
    snippet = yaml.safe_load(block[block.index("values:"):])["values"]
    values = deep_merge(minimal(), snippet)
    del values["codeServer"]["password"]
    objs = helm_install(values)["objects"]
    validate_k8s(objs)
    assert not [o for o in objs if o["kind"] == "Secret"]
    for name in ["code-server", "terminal-sidecar"]:
        env = env_of(container(the_pod(objs), name))
        key = "PASSWORD" if name == "code-server" else "TERMINAL_PASSWORD"
        # The guide's `kubectl create secret generic vscode-password --from-file=password=...`.
        assert env[key] == {"secretKeyRef": {"name": "vscode-password", "key": "password"}}


def test_guide_ingress_example_is_what_the_chart_renders():
    example = guide.yaml_block("kind: Ingress")
    values = minimal(ingress={
        "enabled": True,
        "annotations": example["metadata"]["annotations"],
        "vscode": {"host": "alice-vscode.labs.example.com"},
        "terminal": {"host": "alice-terminal.labs.example.com"},
        "tls": {"enabled": True, "secretName": "alice-vscode-tls"},
    })
    objs = helm_install(values)["objects"]
    validate_k8s(objs)
    ing = one(objs, "Ingress")
    assert ing["metadata"]["annotations"] == example["metadata"]["annotations"]
    rule = ing["spec"]["rules"][0]
    assert rule == example["spec"]["rules"][0]
    assert ing["spec"]["tls"][0]["secretName"] == "alice-vscode-tls"
    assert "alice-vscode.labs.example.com" in ing["spec"]["tls"][0]["hosts"]


def test_guide_network_policy_isolation():
    """The guide's policy stays expressible with values (its peers, its
    egress); the chart additionally limits the ingress to the front-door ports."""
    example = guide.yaml_block("kind: NetworkPolicy")
    values = minimal(networkPolicy={
        "ingressFrom": example["spec"]["ingress"][0]["from"],
        "egressTo": example["spec"]["egress"][0]["to"],
        "allowDns": False,
        "allowInternetEgress": False,
    })
    objs = helm_install(values)["objects"]
    validate_k8s(objs)
    pol = one(objs, "NetworkPolicy")
    assert pol["spec"]["policyTypes"] == example["spec"]["policyTypes"]
    assert pol["spec"]["podSelector"]["matchLabels"]["app"] == "lab-environment"
    assert pol["spec"]["ingress"][0]["from"] == example["spec"]["ingress"][0]["from"]
    assert sorted(p["port"] for p in pol["spec"]["ingress"][0]["ports"]) == [8080, 8081]
    assert pol["spec"]["egress"] == example["spec"]["egress"]
    # On by default, with the ingress controller as the only peer.
    pol = one(helm_install(minimal())["objects"], "NetworkPolicy")
    assert pol["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == \
        {"kubernetes.io/metadata.name": "ingress-nginx"}
