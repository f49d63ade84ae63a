"""The chart's session pod, for real, under Podman 4.3 (`podman kube play`).

The chart is rendered by the real Helm engine for one session (privileged
device mode, `vmm: qemu`, TCG, the `vm` guest image served over HTTP by
`dozlab image serve`), adapted only where Podman 4.3 cannot take it
(podlab.ADAPTATIONS, also in docs/chart.md), played, and checked from the
pod's own network namespace and from a peer on the same Podman network.
The tests of the module run in order against one pod; the last one takes it
down. A second pod, whose image URL answers 404, checks the failure path.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess

import pytest

import podlab
from conftest import Session, session_values
from podlab import podman

READY_TIMEOUT = 1800  # TCG boots on a loaded 2-core machine: generous, never asserted


@pytest.fixture(scope="module")
def lab(images, network, image_server, tmp_path_factory):
    """The session pod, played once for the module; taken down (and its
    secret removed) at the end even when a test fails."""
    sid = f"podtest-{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(18)
    url = image_server["url"]
    values = session_values(sid, password, images, f"{url}/rootfs.ext4.zst", f"{url}/manifest.json")
    played = podlab.Played(podlab.render(values, f"lab-{sid}"))
    s = Session(played, network, tmp_path_factory.mktemp(sid))
    s.password = password
    try:
        r = s.play()
        if r.returncode != 0:
            init = "\n".join(f"--- {c}:\n{podlab.logs(s.container(c))[-3000:]}"
                             for c in ("init-rootfs", "network-setup"))
            raise AssertionError(f"podman kube play failed:\n{r.stdout}\n{r.stderr}\n{init}")
        s.pod_ip = podlab.pod_ip(s.name, network)
        s.pid = podlab.infra_pid(s.name)
        yield s
    finally:
        s.cleanup()


def vm_failed(s: Session):
    st = podlab.state(s.container("firecracker-vm"))
    if st and st.get("Status") == "exited":
        return f"firecracker-vm exited ({st.get('ExitCode')}):\n{podlab.logs(s.container('firecracker-vm'))[-3000:]}"
    return None


def status_json(s: Session) -> dict:
    """`dozlab vm status` in the VM container (works whatever address the status port binds)."""
    r = podman("exec", s.container("firecracker-vm"), "dozlab", "vm", "status", "--json", check=False)
    return json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip().startswith("{") else {}


def status_port(s: Session) -> int:
    """The port of `vm run --status-listen ADDR:PORT` as rendered."""
    args = s.played.pod_rendered["spec"]["containers"][0]["args"]
    return int(args[args.index("--status-listen") + 1].rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def ready(lab):
    """Waits until the VM is ready: `dozlab vm status` exits 0 in the VM container."""

    def is_ready():
        r = podman("exec", lab.container("firecracker-vm"), "dozlab", "vm", "status", check=False)
        return r.returncode == 0

    podlab.wait_for("VM ready", is_ready, READY_TIMEOUT, interval=3, fail_fast=lambda: vm_failed(lab))
    return lab


# ---- the pod's init containers ---------------------------------------------------


def test_init_rootfs_downloaded_and_verified_the_image(ready, image_server, vm_image_dir):
    log = podlab.logs(ready.container("init-rootfs"))
    st = podlab.state(ready.container("init-rootfs"))
    assert st["Status"] == "exited" and st["ExitCode"] == 0, log
    assert f"from {image_server['url']}/rootfs.ext4.zst" in log and "downloaded" in log, log
    manifest = json.loads((vm_image_dir / "manifest.json").read_text())
    image = next(a for a in manifest["artifacts"] if a["path"] == "rootfs.ext4")
    # init-rootfs checked the download against the manifest (IMAGE_MANIFEST_URL)
    # and reports the image's sha256: the manifest's
    assert f"sha256 {image['sha256']}" in log, log


def test_network_setup_made_the_tap_and_the_table(ready):
    st = podlab.state(ready.container("network-setup"))
    assert st["Status"] == "exited" and st["ExitCode"] == 0, podlab.logs(ready.container("network-setup"))
    net = next(c for c in ready.played.pod_rendered["spec"]["initContainers"] if c["name"] == "network-setup")
    tap = next(e["value"] for e in net["env"] if e["name"] == "TAP_DEVICE_NAME")
    links = subprocess.run(["nsenter", f"--net=/proc/{ready.pid}/ns/net", "ip", "-j", "link", "show", tap],
                           capture_output=True, text=True)
    assert links.returncode == 0, links.stderr
    assert json.loads(links.stdout)[0]["ifname"] == tap
    addrs = subprocess.run(["nsenter", f"--net=/proc/{ready.pid}/ns/net", "ip", "-4", "-o", "addr", "show", tap],
                           capture_output=True, text=True).stdout
    assert "172.16.0.1/24" in addrs, addrs
    table = subprocess.run(["nsenter", f"--net=/proc/{ready.pid}/ns/net", "nft", "list", "table", "ip", "dozlab"],
                           capture_output=True, text=True)
    assert table.returncode == 0 and "masquerade" in table.stdout, table.stderr
    assert f"ip daddr {ready.pod_ip} tcp dport 22 dnat" in table.stdout.replace("to ", ""), table.stdout


# ---- the VM and the terminal -----------------------------------------------------------


def test_vm_is_ready_under_qemu_tcg(ready):
    log = podlab.logs(ready.container("firecracker-vm"))
    assert re.search(r"tcg", log, re.I), f"the VM runner says it uses TCG:\n{log[-3000:]}"
    st = status_json(ready)
    assert st.get("phase") == "ready" and st.get("vmm") == "qemu" and st.get("accel") == "tcg", st
    assert st.get("vm_ip") == "172.16.0.2", st
    inside = podlab.in_netns(ready.pid, "http", "GET", f"http://127.0.0.1:{status_port(ready)}/readyz")
    assert inside.get("status") == 200, f"the status endpoint answers inside the pod: {inside}"


def test_terminal_logs_in_and_runs_uname_in_the_vm(ready):
    port = 8081
    r = podlab.in_netns(ready.pid, "terminal", f"http://127.0.0.1:{port}/", ready.password, "uname -a",
                        timeout=400)
    assert r.get("ok"), r
    assert re.search(r"Linux \S+ 6\.\d+\.\d+\S* .*GNU/Linux", r["output"]), r["output"]
    wrong = podlab.in_netns(ready.pid, "http", "POST", f"http://127.0.0.1:{port}/login", "password=wrong")
    assert wrong["status"] == 401, wrong


# ---- code-server -----------------------------------------------------------------------


def test_code_server_health_password_docker_and_workspace(ready):
    health = podlab.wait_for(
        "code-server /healthz",
        lambda: (lambda r: r if r.get("status") == 200 else None)(
            podlab.in_netns(ready.pid, "http", "GET", "http://127.0.0.1:8080/healthz")),
        300)
    assert "status" in json.loads(health["body"]), health
    ok = podlab.in_netns(ready.pid, "http", "POST", "http://127.0.0.1:8080/login",
                         "password=" + ready.password)
    assert ok["status"] == 302 and any(c.startswith("code-server-session=") for c in ok["set_cookie"]), ok
    bad = podlab.in_netns(ready.pid, "http", "POST", "http://127.0.0.1:8080/login", "password=not-it")
    assert not any(c.startswith("code-server-session=") for c in bad["set_cookie"]), bad
    cs = ready.container("code-server")
    env = podman("exec", cs, "printenv", "DOCKER_HOST").stdout.strip()
    assert env == "tcp://172.16.0.2:2375"
    ver = podlab.wait_for(
        "docker version in code-server",
        lambda: (lambda r: r if r.returncode == 0 else None)(
            podman("exec", cs, "docker", "version", "--format", "{{.Server.Version}} {{.Server.Os}}", check=False)),
        300)
    assert re.match(r"\d+\.\d+\.\d+\S* linux", ver.stdout.strip()), ver.stdout
    podman("exec", cs, "sh", "-c", "echo hi > /workspace/.podtest && cat /workspace/.podtest")
    assert podman("exec", cs, "id", "-u").stdout.strip() == "1000"


# ---- isolation: what a peer on the pod network can and cannot reach --------------------


def test_vm_docker_and_status_port_are_not_reachable_from_outside_the_pod(ready, image_server):
    peer = podlab.container_pid(image_server["name"])
    sport = status_port(ready)
    reach = {p: podlab.in_netns(peer, "connect", ready.pod_ip, str(p)) for p in (8081, 22, 2375, sport)}
    assert reach[8081]["ok"], f"the peer reaches the terminal (the check itself works): {reach}"
    assert reach[22]["ok"], f"the forwarded SSH port reaches the VM: {reach}"
    assert not reach[2375]["ok"], f"the VM's Docker (2375) must not be reachable from outside the pod: {reach}"
    assert not reach[sport]["ok"], (
        f"the status port ({sport}) must not be reachable from outside the pod: {reach}")
    inside = podlab.in_netns(ready.pid, "connect", "172.16.0.2", "2375")
    assert inside["ok"], f"inside the pod the VM's Docker answers: {inside}"


# ---- the probes the chart declares ---------------------------------------------------------


def declared_probes(pod: dict):
    for c in pod["spec"]["containers"]:
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if kind in c:
                yield c["name"], kind, c[kind], ports


def test_every_declared_probe_answers_as_the_probe_expects(ready):
    probes = list(declared_probes(ready.played.pod_rendered))
    assert probes, "the chart declares probes"
    results = []
    for cname, kind, probe, ports in probes:
        if "httpGet" in probe:
            g = probe["httpGet"]
            port = ports.get(g["port"], g["port"])
            r = podlab.in_netns(ready.pid, "http", "GET", f"http://127.0.0.1:{port}{g.get('path', '/')}")
            ok = 200 <= r.get("status", 0) < 400
            results.append((cname, kind, f"GET :{port}{g.get('path')}", r.get("status"), ok))
        elif "exec" in probe:
            r = podman("exec", ready.container(cname), *probe["exec"]["command"], check=False)
            results.append((cname, kind, " ".join(probe["exec"]["command"]), r.returncode, r.returncode == 0))
        elif "tcpSocket" in probe:
            t = probe["tcpSocket"]
            port = ports.get(t["port"], t["port"])
            r = podlab.in_netns(ready.pid, "connect", "127.0.0.1", str(port))
            results.append((cname, kind, f"tcp :{port}", r, r.get("ok")))
        else:
            results.append((cname, kind, str(probe), None, False))
    failed = [r for r in results if not r[-1]]
    assert not failed, f"probes that do not answer as declared: {failed}\nall: {results}"


# ---- helm test ------------------------------------------------------------------------------------


def test_the_charts_helm_test_pod_passes(ready):
    test_pod = ready.played.test_rendered
    assert test_pod, "the chart renders a helm test pod"
    f = ready.dir / "test-pod.yaml"
    f.write_text(ready.played.test_pod_yaml(ready.pod_ip))
    ready.extra_pods.append(f)
    r = podman("kube", "play", "--network", ready.network, str(f), check=False)
    assert r.returncode == 0, r.stderr
    name = test_pod["metadata"]["name"]
    ctr = podlab.container_name(name, test_pod["spec"]["containers"][0]["name"])
    st = podlab.wait_for("helm test pod finished",
                         lambda: (lambda s: s if s.get("Status") == "exited" else None)(podlab.state(ctr)), 300)
    log = podlab.logs(ctr)
    assert st["ExitCode"] == 0, log
    assert "terminal ready" in log, log
    podman("kube", "down", str(f), check=False)
    ready.extra_pods.remove(f)


# ---- kube down ---------------------------------------------------------------------------------------


def test_the_pod_stops_the_vm_cleanly_within_the_grace_period_and_kube_down_removes_it(ready):
    grace = ready.played.pod_rendered["spec"]["terminationGracePeriodSeconds"]
    vm = ready.container("firecracker-vm")
    stop = ready.stop()
    assert stop.returncode == 0, stop.stderr
    st = podlab.state(vm)
    log = podlab.logs(vm)
    assert "the VM shut down cleanly" in log, f"VM log after SIGTERM (grace {grace} s):\n{log[-3000:]}"
    assert "was killed" not in log, log[-3000:]
    assert st["Status"] == "exited" and st["ExitCode"] == 0, st
    for c in ("terminal-sidecar", "code-server"):
        cst = podlab.state(ready.container(c))
        assert cst["Status"] == "exited" and cst["ExitCode"] in (0, 143), (c, cst)
    down = ready.down()
    assert down.returncode == 0, down.stderr
    left = podman("ps", "--all", "--filter", f"pod={ready.name}", "--format", "{{.Names}}", check=False).stdout
    assert not left.strip(), left
    vols = podman("volume", "ls", "--format", "{{.Name}}").stdout.split()
    assert not [v for v in vols if v.startswith(ready.name)], vols


# ---- bad input -----------------------------------------------------------------------------------------


BAD_INPUTS = {
    # what is wrong: (image path on the server, rootfs.sha256, what init-rootfs must say)
    "404": ("no-such-image.ext4", None, ["404", "no-such-image.ext4"]),
    "wrong-sha256": ("rootfs.ext4.zst", "0" * 64, ["sha256", "0" * 64]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_image_input_keeps_the_pod_in_init_and_kube_down_leaves_nothing(
        case, images, network, image_server, new_session):
    path, sha, words = BAD_INPUTS[case]
    sid = f"podtest-bad-{secrets.token_hex(3)}"
    values = session_values(sid, secrets.token_urlsafe(18), images, f"{image_server['url']}/{path}", None)
    if sha:
        values["rootfs"]["sha256"] = sha
    s = new_session(values)
    s.play(timeout=600)
    init = s.container("init-rootfs")
    log = podlab.wait_for("init-rootfs failed",
                          lambda: (lambda st: podlab.logs(init) if st.get("Status") == "exited" else None)(
                              podlab.state(init)), 300)
    st = podlab.state(init)
    assert st["ExitCode"] != 0, log
    for w in words:
        assert w in log, f"init-rootfs's error names {w!r}:\n{log}"
    for c in ("network-setup", "firecracker-vm", "terminal-sidecar", "code-server"):
        st = podlab.state(s.container(c))
        assert st.get("Status") in (None, "created", "configured", "initialized"), (
            f"{c} must not run while init-rootfs failed: {st.get('Status')}")
    d = s.down()
    assert d.returncode == 0, d.stderr
    podman("secret", "rm", s.secret)
    s.secret = None
    assert not podman("pod", "exists", s.name, check=False).returncode == 0
    names = podman("ps", "--all", "--format", "{{.Names}}").stdout.split()
    assert not [n for n in names if n.startswith(s.name)], names
    vols = podman("volume", "ls", "--format", "{{.Name}}").stdout.split()
    assert not [v for v in vols if v.startswith(s.name)], vols
    sec = podman("secret", "ls", "--format", "{{.Name}}").stdout.split()
    assert not [x for x in sec if x.startswith(s.name)], sec
    nets = podman("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert [n for n in nets if n.startswith("dozlab-podtest-")] == [network], (
        f"no network but the test's own: {nets}")
