"""The chart's security contexts are enough, and what they add back is needed
(issue 15, items 10 and 11), shown with the real programs: each Dozlab
container's command runs with exactly the identity the chart renders for it
(uid, gid, the pod's fsGroup as supplementary group, the added capabilities as
the only ones, no privilege escalation; via `setpriv`), in a network namespace
the test creates, on directories made like the pod's emptyDirs. Then the VM
boots (QEMU/TCG: Firecracker and KVM guests cannot run here) and becomes ready
as seen by the container's exec probe, while its status port is bound to
loopback only. Needs root, `setpriv`, `ip` and `qemu-system-x86_64`; the guest
image comes from `scripts/test-image vm` (built once, then cached).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import ROOT, container, minimal, render_all, the_pod

POD_IP, PEER_IP = "10.231.0.2", "10.231.0.1"


def needs():
    missing = [t for t in ["setpriv", "ip", "qemu-system-x86_64", "ss"] if shutil.which(t) is None]
    if os.geteuid() != 0 or missing:
        pytest.skip(f"needs root and {missing or 'nothing else'} (euid {os.geteuid()})")


def identity(pod: dict, name: str) -> list[str]:
    """`setpriv` arguments giving a process the container's identity."""
    ctx = container(pod, name)["securityContext"]
    caps = ctx.get("capabilities", {})
    assert caps.get("drop") == ["ALL"], ctx
    uid = ctx.get("runAsUser", 0)
    gid = ctx.get("runAsGroup", 0)
    fs_group = pod["spec"]["securityContext"]["fsGroup"]
    bounding = "-all" + "".join(f",+{c.lower()}" for c in caps.get("add", []))
    args = ["setpriv", "--reuid", str(uid), "--regid", str(gid), "--groups", str(fs_group),
            "--inh-caps", "-all", "--bounding-set", bounding]
    if ctx.get("allowPrivilegeEscalation") is False:
        args.append("--no-new-privs")
    return args + ["--"]


def run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, **kw)


def sh(args: list[str]) -> None:
    out = run(args)
    assert out.returncode == 0, f"{args}: {out.stderr}"


def empty_dir(path: pathlib.Path, fs_group: int) -> pathlib.Path:
    """A directory like the kubelet's emptyDir with fsGroup: 0777 plus setgid, group fsGroup."""
    path.mkdir()
    os.chown(path, 0, fs_group)
    os.chmod(path, 0o2777)
    return path


@pytest.fixture()
def pod_netns():
    """A pod namespace with a veth uplink (default route) to a peer namespace."""
    needs()
    pod, peer = f"dzpriv-{os.getpid()}-pod", f"dzpriv-{os.getpid()}-peer"
    try:
        sh(["ip", "netns", "add", pod])
        sh(["ip", "netns", "add", peer])
        sh(["ip", "-n", pod, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0", "netns", peer])
        sh(["ip", "-n", pod, "addr", "add", f"{POD_IP}/24", "dev", "eth0"])
        sh(["ip", "-n", peer, "addr", "add", f"{PEER_IP}/24", "dev", "peer0"])
        for ns, dev in [(pod, "eth0"), (pod, "lo"), (peer, "peer0"), (peer, "lo")]:
            sh(["ip", "-n", ns, "link", "set", dev, "up"])
        sh(["ip", "-n", pod, "route", "add", "default", "via", PEER_IP])
        sh(["ip", "netns", "exec", pod, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        yield pod, peer
    finally:
        for ns in [pod, peer]:
            run(["ip", "netns", "del", ns])


def vm_image(dozlab_bin: pathlib.Path) -> pathlib.Path:
    out = run([str(ROOT / "scripts" / "test-image"), "vm"], env={**os.environ, "DOZLAB_BIN": str(dozlab_bin)})
    assert out.returncode == 0, out.stderr
    return pathlib.Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture()
def world_tmp():
    """A temporary directory every uid may enter (pytest's own are 0700)."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="dzpriv-"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_each_container_runs_with_exactly_the_rendered_identity_and_capabilities(
        pod_netns, dozlab_bin, world_tmp):
    pod_ns, peer_ns = pod_netns
    tmp_path = world_tmp
    pod = the_pod(render_all(minimal()))
    fs_group = pod["spec"]["securityContext"]["fsGroup"]
    kernels = empty_dir(tmp_path / "kernels", fs_group)
    shared = empty_dir(tmp_path / "shared", fs_group)
    state = tmp_path / "state"
    dozlab = str(dozlab_bin)
    in_pod = ["ip", "netns", "exec", pod_ns]
    # The download source, where uid 1000 may read it.
    source = tmp_path / "rootfs.ext4.zst"
    shutil.copyfile(vm_image(dozlab_bin) / "rootfs.ext4.zst", source)
    os.chmod(source, 0o644)

    # init-rootfs (uid 1000, no capability) downloads and grows the rootfs.
    rootfs = kernels / "rootfs.ext4"
    env = {"PATH": os.environ["PATH"], "IMAGE_DOWNLOAD_URL": f"file://{source}",
           "IMAGE_PATH": str(rootfs), "IMAGE_SIZE": "2G"}
    out = run(identity(pod, "init-rootfs") + [dozlab, "init-rootfs"], env=env)
    assert out.returncode == 0, out.stderr
    st = rootfs.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (1000, 0o644), "what firecracker-vm's DAC_OVERRIDE is for"

    # network-setup (uid 0, NET_ADMIN only) wires the namespace.
    out = run(in_pod + identity(pod, "network-setup") +
              [dozlab, "network-setup", "--config-out", str(shared / "network-config")])
    assert out.returncode == 0, out.stderr

    vm_args = [dozlab, "vm", "run", "--vmm", "qemu", "--accel", "tcg", "--memory", "1024", "--cpus", "2",
               "--rootfs", str(rootfs), "--state-dir", str(state),
               "--network-config", str(shared / "network-config"),
               "--ssh-key-out", str(shared / "vm-ssh-key"), "--known-hosts-out", str(shared / "known_hosts"),
               "--status-listen", container(pod, "firecracker-vm")["args"][-1]]
    vm_identity = identity(pod, "firecracker-vm")

    # Without DAC_OVERRIDE the VM runner cannot open init-rootfs's image.
    bare = [a if not a.startswith("-all,") else "-all" for a in vm_identity]
    out = run(in_pod + bare + vm_args)
    assert out.returncode != 0 and "rootfs" in out.stderr, out.stderr
    assert not (shared / "vm-ssh-key").exists(), "a refused start leaves nothing behind"

    # With the chart's identity it boots, and the exec probe says when it is ready.
    probe = in_pod + vm_identity + container(pod, "firecracker-vm")["readinessProbe"]["exec"]["command"] + \
        ["--state-dir", str(state)]
    probe[len(in_pod) + len(vm_identity)] = dozlab
    log = open(tmp_path / "vm.log", "w")
    vm = subprocess.Popen(in_pod + vm_identity + vm_args, stdout=log, stderr=subprocess.STDOUT,
                          start_new_session=True)
    try:
        ready = False
        while vm.poll() is None and not ready:
            ready = run(probe).returncode == 0
            time.sleep(1)
        assert ready, f"vm run exited {vm.returncode}: {(tmp_path / 'vm.log').read_text()[-3000:]}"
        status = json.loads(run(probe + ["--json"]).stdout)
        assert status["phase"] == "ready" and status["accel"] == "tcg", status

        # The status port is on loopback only: not on the pod IP, not reachable from the peer.
        listening = [line.split()[3] for line in
                     run(in_pod + ["ss", "-Hltn", "sport", "= :8082"]).stdout.splitlines()]
        assert "127.0.0.1:8082" in listening and f"{POD_IP}:8082" not in listening, listening
        assert not any(a.startswith(("0.0.0.0:", "*:", "[::]:")) for a in listening), listening
        got = run(["ip", "netns", "exec", peer_ns, "python3", "-c",
                   f"import socket\ntry:\n socket.create_connection(('{POD_IP}', 8082), timeout=10); print('open')\n"
                   f"except OSError as e:\n print('closed', e)"]).stdout
        assert got.startswith("closed"), got
    finally:
        if vm.poll() is None:
            os.killpg(vm.pid, signal.SIGTERM)
        code = vm.wait(timeout=120)
        log.close()
    assert code == 0, f"clean shutdown: {(tmp_path / 'vm.log').read_text()[-2000:]}"
