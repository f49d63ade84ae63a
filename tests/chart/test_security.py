"""The pod's privileges and network exposure (issue 15, items 10-12 and the
chart side of items 2 and 9): capabilities per container, the VM status port
off the network with exec probes, the NetworkPolicy on by default and in step
with network-setup's deny/allow lists, and the terminal's trusted proxies.
Every rendering is validated against the Kubernetes schemas."""

from __future__ import annotations

import pytest

from conftest import (
    by_kind,
    container,
    env_of,
    helm_install,
    minimal,
    one,
    render_all,
    schema_error,
    the_pod,
    validate_k8s,
)

PRIVATE = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"]
BUILTIN = ["169.254.0.0/16", "100.100.100.200/32"]
STATUS = ["dozlab", "vm", "status"]


def rendered(values: dict) -> list[dict]:
    objs = render_all(values)
    validate_k8s(objs)
    return objs


def all_containers(pod: dict) -> list[dict]:
    return pod["spec"]["initContainers"] + pod["spec"]["containers"]


# Item 10 -------------------------------------------------------------------

# The only capabilities any container gets back after dropping ALL, and why.
ADDED = {
    "network-setup": ["NET_ADMIN"],  # tap device, nftables
    "firecracker-vm": ["DAC_OVERRIDE"],  # open init-rootfs's uid-1000 0644 image read-write
}


def test_every_container_drops_all_capabilities_and_adds_back_only_what_it_needs():
    pod = the_pod(rendered(minimal()))
    for c in all_containers(pod):
        ctx = c["securityContext"]
        caps = ctx.get("capabilities", {})
        assert caps.get("drop") == ["ALL"], f"{c['name']} keeps the default capabilities: {ctx}"
        assert caps.get("add", []) == ADDED.get(c["name"], []), f"{c['name']}: {caps}"
        assert ctx.get("allowPrivilegeEscalation") is False, c["name"]
        assert not ctx.get("privileged"), c["name"]
    vm = container(pod, "firecracker-vm")
    assert "NET_ADMIN" not in vm["securityContext"]["capabilities"].get("add", [])


def test_security_contexts_are_values_and_privileged_mode_still_wins():
    pod = the_pod(rendered(minimal(firecracker={"securityContext": {"runAsUser": 0, "capabilities": {
        "drop": ["ALL"], "add": ["DAC_OVERRIDE", "SYS_RESOURCE"]}}})))
    assert container(pod, "firecracker-vm")["securityContext"]["capabilities"]["add"] == \
        ["DAC_OVERRIDE", "SYS_RESOURCE"]
    pod = the_pod(rendered(minimal(firecracker={"devices": {"mode": "privileged"}})))
    assert container(pod, "firecracker-vm")["securityContext"] == {"privileged": True}
    # network-setup's image runs as uid 1000: privileged, it still needs uid 0
    # for NET_ADMIN (found by tests/pod under Podman)
    assert container(pod, "network-setup")["securityContext"] == {"privileged": True, "runAsUser": 0}


# Item 11 -------------------------------------------------------------------

def test_the_vm_status_port_is_off_the_network_and_the_probes_exec_vm_status():
    objs = rendered(minimal(ingress={"enabled": True, "domain": "labs.example.com"}))
    pod = the_pod(objs)
    vm = container(pod, "firecracker-vm")
    assert vm["args"][-2:] == ["--status-listen", "127.0.0.1:8082"]
    for c in all_containers(pod):
        ports = [p["containerPort"] for p in c.get("ports", [])]
        assert 8082 not in ports, f"{c['name']} declares 8082"
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"]:
        assert vm[probe] == {**vm[probe], "exec": {"command": STATUS}}, vm[probe]
        assert "httpGet" not in vm[probe]
    # Liveness starts after startup (the VM was ready once) and is slower than readiness.
    assert vm["livenessProbe"]["periodSeconds"] > vm["readinessProbe"]["periodSeconds"]
    assert vm["startupProbe"]["periodSeconds"] * vm["startupProbe"]["failureThreshold"] >= 600
    svc = one(objs, "Service")
    assert 8082 not in [p["port"] for p in svc["spec"]["ports"]]
    pol = one(objs, "NetworkPolicy")
    assert "8082" not in str(pol)


def test_the_status_port_value_still_moves_the_loopback_listener():
    vm = container(the_pod(rendered(minimal(firecracker={"statusPort": 9102}))), "firecracker-vm")
    assert vm["args"][-1] == "127.0.0.1:9102"


# Item 12 -------------------------------------------------------------------

def test_network_policy_is_on_by_default_with_the_front_doors_only_from_the_ingress_controller():
    pol = one(rendered(minimal()), "NetworkPolicy")
    assert pol["spec"]["policyTypes"] == ["Ingress", "Egress"]
    front = pol["spec"]["ingress"][0]
    assert front["from"] == [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ingress-nginx"}},
    }]
    assert sorted(p["port"] for p in front["ports"]) == [8080, 8081]
    helm_test = pol["spec"]["ingress"][1]
    assert [p["port"] for p in helm_test["ports"]] == [8081]
    assert len(pol["spec"]["ingress"]) == 2


def test_network_policy_egress_matches_the_vm_filter_by_default():
    pol = one(rendered(minimal()), "NetworkPolicy")
    egress = pol["spec"]["egress"]
    dns = egress[0]
    assert "to" not in dns and sorted((p["port"], p["protocol"]) for p in dns["ports"]) == \
        [(53, "TCP"), (53, "UDP")]
    internet = egress[1]["to"][0]["ipBlock"]
    assert internet["cidr"] == "0.0.0.0/0"
    assert internet["except"] == PRIVATE + BUILTIN
    # Nothing else: no blanket "every pod of the cluster" peer.
    assert len(egress) == 2


def test_ingress_controller_selectors_and_egress_peers_are_values():
    values = minimal(
        networkPolicy={
            "ingressFrom": [{"namespaceSelector": {"matchLabels": {"team": "edge"}},
                             "podSelector": {"matchLabels": {"app": "traefik"}}}],
            "allowVmSsh": True,
            "dnsTo": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                       "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "egressTo": [{"podSelector": {"matchLabels": {"app": "image-server"}}}],
        },
        forwardPorts=[{"name": "web", "port": 8000, "vmPort": 80}],
    )
    pol = one(rendered(values), "NetworkPolicy")
    front = pol["spec"]["ingress"][0]
    assert front["from"][0]["podSelector"] == {"matchLabels": {"app": "traefik"}}
    assert sorted(p["port"] for p in front["ports"]) == [22, 8000, 8080, 8081]
    egress = pol["spec"]["egress"]
    assert egress[0]["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert egress[1] == {"to": [{"podSelector": {"matchLabels": {"app": "image-server"}}}]}


def test_network_policy_can_be_closed_or_turned_off():
    closed = minimal(networkPolicy={"allowDns": False, "allowInternetEgress": False})
    pol = one(rendered(closed), "NetworkPolicy")
    assert pol["spec"]["egress"] == []
    assert by_kind(rendered(minimal(networkPolicy={"enabled": False})), "NetworkPolicy") == []


# Item 9, chart side ----------------------------------------------------------

def test_default_deny_list_reaches_network_setup():
    env = env_of(container(the_pod(rendered(minimal())), "network-setup"))
    assert env["DENY_CIDRS"] == ",".join(PRIVATE)
    assert "ALLOW_CIDRS" not in env


def test_deny_and_allow_cidrs_reach_network_setup_and_the_policy():
    values = minimal(network={"denyCidrs": ["10.96.0.0/12", "10.244.0.0/16"],
                              "allowCidrs": ["10.96.0.10/32", "169.254.20.10"]})
    objs = rendered(values)
    env = env_of(container(the_pod(objs), "network-setup"))
    assert env["DENY_CIDRS"] == "10.96.0.0/12,10.244.0.0/16"
    assert env["ALLOW_CIDRS"] == "10.96.0.10/32,169.254.20.10"
    egress = one(objs, "NetworkPolicy")["spec"]["egress"]
    assert egress[1]["to"][0]["ipBlock"]["except"] == ["10.96.0.0/12", "10.244.0.0/16"] + BUILTIN
    assert egress[2] == {"to": [{"ipBlock": {"cidr": "10.96.0.10/32"}},
                                {"ipBlock": {"cidr": "169.254.20.10/32"}}]}

    empty = rendered(minimal(network={"denyCidrs": []}))
    assert "DENY_CIDRS" not in env_of(container(the_pod(empty), "network-setup"))
    assert one(empty, "NetworkPolicy")["spec"]["egress"][1]["to"][0]["ipBlock"]["except"] == BUILTIN


@pytest.mark.parametrize("values,key", [
    (minimal(network={"denyCidrs": ["10.0.0.0/33"]}), "/network/denyCidrs/0"),
    (minimal(network={"denyCidrs": ["fd00::/8"]}), "/network/denyCidrs/0"),
    (minimal(network={"allowCidrs": ["10.0.0.0/8", "banana"]}), "/network/allowCidrs/1"),
    (minimal(terminal={"trustedProxies": ["proxy.example.com"]}), "/terminal/trustedProxies/0"),
    (minimal(networkPolicy={"allowDns": "yes"}), "/networkPolicy/allowDns"),
])
def test_bad_network_values_are_refused_naming_the_key(values, key):
    msg = schema_error(values)
    assert key in msg, msg


# Item 2, chart side -----------------------------------------------------------

def test_the_terminal_trusts_forwarded_for_only_from_named_proxies_behind_the_ingress():
    ing = {"enabled": True, "domain": "labs.example.com"}
    env = env_of(container(the_pod(rendered(minimal(ingress=ing))), "terminal-sidecar"))
    assert env["TRUSTED_PROXIES"] == ",".join(PRIVATE)
    env = env_of(container(the_pod(rendered(minimal())), "terminal-sidecar"))
    assert "TRUSTED_PROXIES" not in env, "no Ingress, no proxy to trust"
    narrow = minimal(ingress=ing, terminal={"trustedProxies": ["10.244.0.0/16", "fd00:10::/64"]})
    env = env_of(container(the_pod(rendered(narrow)), "terminal-sidecar"))
    assert env["TRUSTED_PROXIES"] == "10.244.0.0/16,fd00:10::/64"
    none = minimal(ingress=ing, terminal={"trustedProxies": []})
    assert "TRUSTED_PROXIES" not in env_of(container(the_pod(rendered(none)), "terminal-sidecar"))


def test_notes_say_what_the_vm_and_the_network_can_reach():
    notes = helm_install(minimal())["notes"]
    assert "not the pod itself, link-local and\nmetadata addresses, or 10.0.0.0/8, 172.16.0.0/12" in notes, notes
    assert "NetworkPolicy lab-session-alice-001-isolation" in notes
    notes = helm_install(minimal(networkPolicy={"enabled": False}, network={"denyCidrs": []}))["notes"]
    assert "NetworkPolicy" not in notes and "metadata addresses." in notes
