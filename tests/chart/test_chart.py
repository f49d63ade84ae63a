"""The chart itself: wiring to the dozlab subcommands, each fixed bug of the
original manifest, schema errors that name the key, labels, TTL, Ingress,
NetworkPolicy and the `helm test` hook. Every rendering is validated against
the Kubernetes schemas."""

from __future__ import annotations

import base64

import helm_python as helm
import pytest

from conftest import (
    CHART,
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

FULL = minimal(
    vmm="qemu",
    forwardPorts=[{"name": "web", "port": 8000, "vmPort": 80}, {"name": "api", "port": 9000}],
    ingress={"enabled": True, "domain": "labs.example.com", "tls": {"enabled": True}},
    networkPolicy={"enabled": True},
    rootfs={"imageUrl": "https://example.com/k8s.ext4.zst", "sha256": "A" * 64,
            "manifestUrl": "https://example.com/manifest.json", "cache": {"enabled": True}},
    labels={"course": "kubernetes-101", "cohort": "2024-spring"},
)


def test_terminal_allowed_origins():
    pod = pod_of(minimal(terminal={"allowedOrigins": ["https://portal.example.com", "https://b.example.com"]}))
    env = env_of(container(pod, "terminal-sidecar"))
    assert env["ALLOWED_ORIGINS"] == "https://portal.example.com,https://b.example.com"


def pod_of(values: dict) -> dict:
    objs = render_all(values)
    validate_k8s(objs)
    return the_pod(objs)


def test_every_object_of_a_full_rendering_is_valid_kubernetes():
    objs = render_all(FULL)
    validate_k8s(objs)
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == ["Ingress", "NetworkPolicy", "Pod", "Pod", "Secret", "Service"]


def test_no_shell_placeholder_survives_rendering():
    for values in [minimal(), FULL]:
        with helm.Chart.load(str(CHART)) as chart:
            out = chart.render(values, name="lab-alice", namespace="default", is_install=True)
        for name, text in out.items():
            assert "${" not in text, f"{name} still holds a ${{...}} placeholder"
        pod = the_pod(render_all(values))
        assert pod["metadata"]["name"] == "lab-session-alice-001"


def test_workspace_is_writable_by_default_and_read_only_on_request():
    mounts = {m["name"]: m for m in container(pod_of(minimal()), "code-server")["volumeMounts"]}
    assert mounts["vm-data"]["mountPath"] == "/workspace"
    assert mounts["vm-data"]["readOnly"] is False
    ro = minimal(codeServer={"password": "0123456789", "workspaceReadOnly": True})
    mounts = {m["name"]: m for m in container(pod_of(ro), "code-server")["volumeMounts"]}
    assert mounts["vm-data"]["readOnly"] is True


def test_password_is_only_in_the_secret_and_read_through_secret_key_ref():
    values = minimal()
    password = values["codeServer"]["password"]
    objs = render_all(values)
    secret = one(objs, "Secret", "lab-session-alice-001-secrets")
    assert base64.b64decode(secret["data"]["vscode-password"]).decode() == password
    for o in objs:
        if o["kind"] != "Secret":
            assert password not in str(o), f"password leaked into {o['kind']}"
    pod = the_pod(objs)
    ref = {"secretKeyRef": {"name": "lab-session-alice-001-secrets", "key": "vscode-password"}}
    assert env_of(container(pod, "code-server"))["PASSWORD"] == ref
    assert env_of(container(pod, "terminal-sidecar"))["TERMINAL_PASSWORD"] == ref


def test_existing_secret_renders_no_secret():
    values = minimal(codeServer={"existingSecret": "sealed-pw", "existingSecretKey": "pw"})
    objs = render_all(values)
    validate_k8s(objs)
    assert by_kind(objs, "Secret") == []
    ref = env_of(container(the_pod(objs), "code-server"))["PASSWORD"]
    assert ref == {"secretKeyRef": {"name": "sealed-pw", "key": "pw"}}


@pytest.mark.parametrize("values,key", [
    ({"session": {"userId": "a"}, "rootfs": {"imageUrl": "https://e/x"}, "codeServer": {"password": "12345678"}},
     "/session/id"),
    ({"session": {"id": "a"}, "rootfs": {"imageUrl": "https://e/x"}, "codeServer": {"password": "12345678"}},
     "/session/userId"),
    ({"session": {"id": "a", "userId": "b"}, "codeServer": {"password": "12345678"}}, "/rootfs/imageUrl"),
    ({"session": {"id": "a", "userId": "b"}, "rootfs": {"imageUrl": "https://e/x"}}, "/codeServer/password"),
    ({"session": {"id": "a", "userId": "b"}, "rootfs": {"imageUrl": "https://e/x"}}, "/codeServer/existingSecret"),
    (minimal(firecracker={"vm": {"memory": "2GB"}}), "/firecracker/vm/memory"),
    (minimal(firecracker={"vm": {"cpuCount": "two"}}), "/firecracker/vm/cpuCount"),
    (minimal(session_id="Alice_001"), "/session/id"),
    (minimal(session={"id": "a", "userId": "b", "ttl": "2 hours"}), "/session/ttl"),
    (minimal(vmm="kvm"), "/vmm"),
    (minimal(rootfs={"imageUrl": "https://e/x", "sha256": "abc"}), "/rootfs/sha256"),
    (minimal(rootfs={"imageUrl": "https://e/x", "diskSize": "4 gigs"}), "/rootfs/diskSize"),
    (minimal(forwardPorts=[{"name": "docker", "port": 2375}]), "/forwardPorts/0/port"),
    (minimal(volumes={"vmData": {"sizeLimit": "lots"}}), "/volumes/vmData/sizeLimit"),
    (minimal(codeserver={"password": "x"}), "codeserver"),
])
def test_schema_errors_name_the_key(values, key):
    msg = schema_error(values)
    assert key in msg, msg


@pytest.mark.parametrize("values,words", [
    (minimal(codeServer={"password": "12345678", "existingSecret": "x"}),
     "codeServer.password and codeServer.existingSecret are both set"),
    (minimal(ingress={"enabled": True}), "ingress.enabled is true but no hosts are set"),
    (minimal(forwardPorts=[{"name": "a", "port": 9000}, {"name": "a", "port": 9001}]),
     "forwardPorts[1].name \"a\" is used twice"),
    (minimal(forwardPorts=[{"name": "a", "port": 9000}, {"name": "b", "port": 9000}]),
     "forwardPorts[1].port 9000 is used twice"),
])
def test_template_checks_name_the_key(values, words):
    assert words in schema_error(values)


def test_labels_standard_guide_and_user_merged():
    values = minimal(labels={"course": "k8s-101", "app": "hijack", "session-id": "other"})
    objs = render_all(values)
    for o in objs:
        if o["metadata"]["name"].endswith("-test-ready"):
            continue
        labels = o["metadata"]["labels"]
        assert labels["app"] == "lab-environment" and labels["session-id"] == "alice-001"
        assert labels["user-id"] == "alice" and labels["course"] == "k8s-101"
        assert labels["app.kubernetes.io/name"] == "dozlab-session"
        assert labels["app.kubernetes.io/instance"] == "lab-alice"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/part-of"] == "dozlab"
        assert labels["app.kubernetes.io/version"] and labels["helm.sh/chart"]
    svc = one(objs, "Service")
    assert svc["spec"]["selector"] == {"app": "lab-environment", "session-id": "alice-001"}


@pytest.mark.parametrize("ttl,seconds", [
    ("2h", 7200), ("1h30m", 5400), ("90m", 5400), ("1d", 86400), ("45s", 45), ("7200", 7200),
    (3600, 3600), ("2H", 7200), ("", None), ("0", None), (0, None),
])
def test_ttl_becomes_active_deadline_seconds(ttl, seconds):
    pod = pod_of(minimal(session={"id": "alice-001", "userId": "alice", "ttl": ttl}))
    assert pod["spec"].get("activeDeadlineSeconds") == seconds


def test_default_ttl_is_two_hours():
    assert pod_of(minimal())["spec"]["activeDeadlineSeconds"] == 7200


def test_pod_wiring_to_the_dozlab_subcommands():
    pod = pod_of(FULL)
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["fsGroup"] == 1000
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["terminationGracePeriodSeconds"] >= 30
    assert [c["name"] for c in spec["initContainers"]] == ["init-rootfs", "network-setup"]
    assert [c["name"] for c in spec["containers"]] == ["firecracker-vm", "terminal-sidecar", "code-server"]

    init = container(pod, "init-rootfs")
    assert init["command"] == ["dozlab"] and init["args"] == ["init-rootfs"]
    assert env_of(init) == {
        "IMAGE_DOWNLOAD_URL": "https://example.com/k8s.ext4.zst",
        "IMAGE_PATH": "/srv/vm/kernels/rootfs.ext4",
        "IMAGE_SIZE": "4G",
        "IMAGE_SHA256": "a" * 64,
        "IMAGE_MANIFEST_URL": "https://example.com/manifest.json",
        "IMAGE_CACHE_DIR": "/var/cache/dozlab",
    }
    assert {m["mountPath"] for m in init["volumeMounts"]} == {"/srv/vm/kernels", "/var/cache/dozlab"}
    assert init["securityContext"]["runAsNonRoot"] is True

    net = container(pod, "network-setup")
    assert net["args"] == ["network-setup", "--config-out", "/shared/network-config"]
    env = env_of(net)
    assert env["FORWARD_PORTS"] == "22,8000:80,9000:9000"
    assert (env["TAP_DEVICE_NAME"], env["GATEWAY_IP"], env["VM_IP"], env["PREFIX_LEN"]) == \
        ("tap0", "172.16.0.1", "172.16.0.2", "24")
    assert "NET_ADMIN" in net["securityContext"]["capabilities"]["add"]
    assert net["resources"]["limits"]["devices.kubevirt.io/tun"] == "1"

    vm = container(pod, "firecracker-vm")
    assert vm["args"] == ["vm", "run", "--vmm", "qemu", "--status-listen", "127.0.0.1:8082"]
    env = env_of(vm)
    for k, v in {"ROOTFS_PATH": "/srv/vm/kernels/rootfs.ext4", "CPU_COUNT": "2", "MEMORY": "2048",
                 "SESSION_ID": "alice-001", "NETWORK_CONFIG": "/shared/network-config",
                 "SSH_KEY_PATH": "/shared/vm-ssh-key", "KNOWN_HOSTS_PATH": "/shared/known_hosts",
                 "TAP_DEVICE_NAME": "tap0", "VM_IP": "172.16.0.2", "GATEWAY_IP": "172.16.0.1"}.items():
        assert env[k] == v, k
    assert "KERNEL_PATH" not in env
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"]:
        assert vm[probe]["exec"]["command"] == ["dozlab", "vm", "status"]
    ports = {p["name"]: p["containerPort"] for p in vm["ports"]}
    assert ports["vm-ssh"] == 22 and ports["web"] == 8000 and "vm-status" not in ports
    limits = vm["resources"]["limits"]
    assert limits["devices.kubevirt.io/kvm"] == "1" and limits["devices.kubevirt.io/tun"] == "1"
    assert not vm["securityContext"].get("privileged")

    term = container(pod, "terminal-sidecar")
    assert term["args"] == ["terminal", "--listen", "0.0.0.0:8081"]
    env = env_of(term)
    assert (env["VM_IP"], env["VM_SSH_PORT"], env["SESSION_ID"]) == ("172.16.0.2", "22", "alice-001")
    assert env["SSH_KEY_PATH"] == "/shared/vm-ssh-key" and env["KNOWN_HOSTS_PATH"] == "/shared/known_hosts"
    assert (env["SSH_USER"], env["IDLE_TIMEOUT"], env["MAX_SHELLS"]) == ("root", "1h", "8")
    assert "ALLOWED_ORIGINS" not in env
    assert term["livenessProbe"]["httpGet"]["path"] == "/health"
    assert term["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert term["volumeMounts"] == [{"name": "shared-config", "mountPath": "/shared", "readOnly": True}]

    code = container(pod, "code-server")
    assert code["image"].startswith("codercom/code-server:")
    assert code["args"] == ["--auth", "password", "--disable-telemetry", "--disable-update-check",
                            "--bind-addr", "0.0.0.0:8080", "/workspace"]
    assert env_of(code)["DOCKER_HOST"] == "tcp://172.16.0.2:2375"
    assert code["securityContext"]["runAsUser"] == 1000
    assert code["livenessProbe"]["httpGet"]["path"] == "/healthz"

    vols = {v["name"]: v for v in spec["volumes"]}
    for name, size in {"vm-kernels": "6Gi", "vm-data": "10Gi", "vscode-data": "1Gi",
                       "shared-config": "10Mi"}.items():
        assert vols[name]["emptyDir"]["sizeLimit"] == size
    assert vols["image-cache"]["hostPath"]["path"] == "/var/cache/dozlab/images"


def test_privileged_fallback_and_qemu_without_kvm():
    pod = pod_of(minimal(firecracker={"devices": {"mode": "privileged"}}))
    vm, net = container(pod, "firecracker-vm"), container(pod, "network-setup")
    assert vm["securityContext"]["privileged"] is True and net["securityContext"]["privileged"] is True
    assert "devices.kubevirt.io/kvm" not in vm["resources"]["limits"]
    assert "sysctls" not in pod["spec"]["securityContext"]

    pod = pod_of(minimal(vmm="qemu", firecracker={"devices": {"kvm": False}}))
    limits = container(pod, "firecracker-vm")["resources"]["limits"]
    assert "devices.kubevirt.io/kvm" not in limits and limits["devices.kubevirt.io/tun"] == "1"


def test_image_registry_and_kernel_path():
    pod = pod_of(minimal(imageRegistry="registry.example.com/",
                         firecracker={"kernelPath": "/opt/dozlab/vmlinux", "image": {"tag": "1.2.3"}}))
    assert container(pod, "firecracker-vm")["image"] == "registry.example.com/dozlab/dozlab-vm:1.2.3"
    assert container(pod, "init-rootfs")["image"].startswith("registry.example.com/dozlab/dozlab:")
    assert env_of(container(pod, "firecracker-vm"))["KERNEL_PATH"] == "/opt/dozlab/vmlinux"


def test_service_exposes_vscode_terminal_ssh_and_forwarded_ports():
    svc = one(render_all(FULL), "Service", "lab-service-alice-001")
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    assert ports == {"vscode": (8080, 8080), "terminal": (8081, 8081), "vm-ssh": (22, 22),
                     "web": (8000, 8000), "api": (9000, 9000)}


def test_ingress_hosts_from_domain_with_tls():
    ing = one(render_all(FULL), "Ingress")
    hosts = {r["host"]: r["http"]["paths"][0]["backend"]["service"] for r in ing["spec"]["rules"]}
    assert hosts == {
        "alice-001-vscode.labs.example.com": {"name": "lab-service-alice-001", "port": {"number": 8080}},
        "alice-001-terminal.labs.example.com": {"name": "lab-service-alice-001", "port": {"number": 8081}},
    }
    assert ing["spec"]["tls"][0]["secretName"] == "lab-session-alice-001-tls"
    assert by_kind(render_all(minimal()), "Ingress") == []


def test_network_policy_isolates_the_session():
    pol = one(render_all(FULL), "NetworkPolicy")
    assert pol["spec"]["podSelector"]["matchLabels"] == {"app": "lab-environment", "session-id": "alice-001"}
    allowed = {p["port"] for p in pol["spec"]["ingress"][0]["ports"]}
    assert allowed == {8080, 8081, 8000, 9000}, "SSH and the status port stay closed by default"
    test_peer = pol["spec"]["ingress"][1]["from"][0]["podSelector"]["matchLabels"]
    assert test_peer["app.kubernetes.io/component"] == "helm-test"
    blocks = [t["ipBlock"] for e in pol["spec"]["egress"] for t in e.get("to", []) if "ipBlock" in t]
    assert blocks and "10.0.0.0/8" in blocks[0]["except"]
    closed = render_all(minimal(networkPolicy={"enabled": True, "allowInternetEgress": False}))
    pol = one(closed, "NetworkPolicy")
    assert all("ipBlock" not in t for e in pol["spec"]["egress"] for t in e.get("to", []))
    assert by_kind(render_all(minimal(networkPolicy={"enabled": False})), "NetworkPolicy") == []


def test_helm_test_hook_checks_the_terminal_ready_endpoint():
    objs = render_all(minimal())
    hook = one(objs, "Pod", "lab-session-alice-001-test-ready")
    assert hook["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = hook["spec"]["containers"][0]["command"][-1]
    assert "http://lab-service-alice-001:8081/ready" in script
    assert hook["spec"]["automountServiceAccountToken"] is False
    # `helm install` itself does not create the hook pod.
    assert [o["metadata"]["name"] for o in helm_install(minimal())["objects"] if o["kind"] == "Pod"] == \
        ["lab-session-alice-001"]


def test_notes_tell_how_to_connect_and_warn_about_data_loss():
    notes = helm_install(minimal(codeServer={"existingSecret": "pw"}))["notes"]
    assert "kubectl port-forward -n default pod/lab-session-alice-001 8080:8080 8081:8081" in notes
    assert "kubectl get secret pw -n default -o jsonpath='{.data.password}' | base64 -d" in notes
    assert "EPHEMERAL" in notes and "lost when the pod ends" in notes


def test_readme_documents_every_value():
    import yaml as _yaml

    readme = (CHART / "README.md").read_text()
    values = _yaml.safe_load((CHART / "values.yaml").read_text())
    missing = []

    def walk(d, prefix=""):
        for k, v in d.items():
            path = f"{prefix}.{k}" if prefix else k
            if k in ("resources", "securityContext", "ingressFrom", "egressTo") or not (isinstance(v, dict) and v):
                if f"`{path}`" not in readme:
                    missing.append(path)
            else:
                walk(v, path)

    walk(values)
    assert not missing, f"README.md does not document: {missing}"


def test_numeric_set_values_keep_working():
    """`--set codeServer.password=12345678 --set session.id=12345` parse as integers."""
    values = helm.parse_set_string(
        "session.id=12345,session.userId=42,rootfs.imageUrl=https://e/x.ext4,"
        "codeServer.password=12345678,session.ttl=3600,firecracker.vm.memory=1024")
    assert values["session"]["id"] == 12345
    objs = helm_install(values, release="lab-12345")["objects"]
    validate_k8s(objs)
    pod = the_pod(objs)
    assert pod["metadata"]["name"] == "lab-session-12345"
    assert pod["metadata"]["labels"]["user-id"] == "42"
    assert pod["spec"]["activeDeadlineSeconds"] == 3600
    assert env_of(container(pod, "firecracker-vm"))["MEMORY"] == "1024"
    secret = one(objs, "Secret")
    assert base64.b64decode(secret["data"]["vscode-password"]).decode() == "12345678"


def test_big_numbers_from_values_files_are_not_printed_in_exponent_form():
    """YAML numbers reach the templates as float64 (1764097268 -> 1.764097268e+09)."""
    values = helm.values_from_yaml(
        "session: {id: 1764097268, userId: 1764097268, ttl: 86400}\n"
        "rootfs: {imageUrl: 'https://e/x.ext4'}\n"
        "codeServer: {password: 123456789012}\n"
        "firecracker: {image: {tag: 20260101}}\n")
    rel = helm_install(values, release="lab-1764097268")
    objs = rel["objects"]
    validate_k8s(objs)
    pod = the_pod(objs)
    assert pod["metadata"]["name"] == "lab-session-1764097268"
    assert pod["metadata"]["labels"]["user-id"] == "1764097268"
    assert container(pod, "firecracker-vm")["image"].endswith(":20260101")
    secret = one(objs, "Secret")
    assert base64.b64decode(secret["data"]["vscode-password"]).decode() == "123456789012"
    assert "e+" not in rel["manifest"] and "e+" not in rel["notes"]
