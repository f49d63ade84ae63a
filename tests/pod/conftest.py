"""Fixtures of the pod test: the images (scripts/build-images), a Podman
network of our own with no way out, the `vm` guest image served by
`dozlab image serve` in a container on that network, and a helper to play a
rendered session and take it down.

Everything a fixture creates is removed by its finalizer, also when a test
fails: pods (`podman kube down`), podman secrets, the image-server container,
the network.
"""

from __future__ import annotations

import os
import pathlib
import secrets
import shutil
import subprocess

import pytest

import podlab
from podlab import podman

IMAGE_SERVER_PORT = 8000


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (rootful Podman, nsenter)"
    for tool in ("podman", "runc", "nsenter", "mmdebstrap"):
        if not shutil.which(tool):
            return f"{tool} not found: run scripts/setup"
    return None


@pytest.fixture(scope="session")
def tag() -> str:
    return podlab.chart_app_version()


@pytest.fixture(scope="session")
def images(tag) -> dict:
    """Builds (or finds, when cached) every image; returns {name: ref} plus 'base'."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    cmd = [str(podlab.ROOT / "scripts" / "build-images")]
    if os.environ.get("DOZLAB_RELEASE_BIN"):
        cmd += ["--binary", os.environ["DOZLAB_RELEASE_BIN"]]
    r = subprocess.run(cmd, env=podlab.env(), capture_output=True, text=True, timeout=3600)
    assert r.returncode == 0, f"scripts/build-images failed:\n{r.stderr[-4000:]}"
    base = next(l.split(": ", 1)[1] for l in r.stdout.splitlines() if l.startswith("base: "))
    helm_test = f"dozlab/helm-test:{tag}"
    podman("build", "--network", "host", "--pull=never", "--tag", helm_test,
           "--build-arg", f"BASE_IMAGE={base}", "--file", str(podlab.HERE / "helm-test.Containerfile"),
           str(podlab.HERE), timeout=1200)
    return {
        "dozlab": f"dozlab/dozlab:{tag}",
        "dozlab-vm": f"dozlab/dozlab-vm:{tag}",
        "code-server": f"dozlab/code-server:{tag}",
        "helm-test": helm_test,
        "base": base,
        "built": r.stdout,
    }


@pytest.fixture(scope="session")
def vm_image_dir() -> pathlib.Path:
    """A cached built `vm` guest image (scripts/test-image vm)."""
    r = subprocess.run([str(podlab.ROOT / "scripts" / "test-image"), "vm"], capture_output=True,
                       text=True, timeout=3600)
    assert r.returncode == 0, f"scripts/test-image vm failed:\n{r.stderr[-3000:]}"
    path = pathlib.Path(r.stdout.strip().splitlines()[-1])
    assert (path / "manifest.json").exists(), path
    return path


@pytest.fixture(scope="session")
def network(images):
    """An internal Podman network: pods on it reach each other, nothing else
    (no gateway, no masquerade, no DNS)."""
    name = f"dozlab-podtest-{secrets.token_hex(3)}"
    podman("network", "create", "--internal", "--disable-dns", name)
    yield name
    podman("network", "rm", "--force", name, check=False)


@pytest.fixture(scope="session")
def image_server(images, network, vm_image_dir):
    """`dozlab image serve` in a container on the network; yields its base URL
    and the container's name (a peer outside the session pod)."""
    name = f"{network}-images"
    podman("run", "--detach", "--name", name, "--network", network,
           "--volume", f"{vm_image_dir}:/srv/images:ro", images["dozlab"],
           "image", "serve", "/srv/images", "--listen", f"0.0.0.0:{IMAGE_SERVER_PORT}")
    try:
        ip = podlab.wait_for("image server address", lambda: _ip_of(name, network), 60)
        url = f"http://{ip}:{IMAGE_SERVER_PORT}"
        pid = podlab.container_pid(name)
        podlab.wait_for("image server answers",
                        lambda: podlab.in_netns(pid, "http", "GET", url + "/manifest.json")["status"] == 200, 60)
        yield {"url": url, "name": name, "ip": ip}
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)


def _ip_of(container: str, network: str) -> str | None:
    import json

    nets = json.loads(podman("inspect", "--format", "{{json .NetworkSettings.Networks}}", container).stdout)
    return (nets.get(network) or {}).get("IPAddress") or None


def session_values(session_id: str, password: str, images: dict, image_url: str,
                   manifest_url: str | None) -> dict:
    """One session as the test plays it: privileged device mode, QEMU under
    TCG, the locally built images, a small VM."""
    repo, _, tag = images["code-server"].rpartition(":")
    ht_repo, _, ht_tag = images["helm-test"].rpartition(":")
    values = {
        "session": {"id": session_id, "userId": "podtest", "ttl": "2h"},
        "vmm": "qemu",
        "rootfs": {"imageUrl": image_url, "diskSize": "4G"},
        "network": {"ipForwardSysctl": False},
        "firecracker": {
            "devices": {"mode": "privileged", "kvm": False},
            "vm": {"cpuCount": "2", "memory": "1024"},
            "extraEnv": [
                {"name": "DOZLAB_ACCEL", "value": "tcg"},
                {"name": "BOOT_TIMEOUT", "value": "900"},
            ],
        },
        "codeServer": {"password": password, "image": {"repository": repo, "tag": tag}},
        "tests": {"image": {"repository": ht_repo, "tag": ht_tag}},
    }
    if manifest_url:
        values["rootfs"]["manifestUrl"] = manifest_url
    return values


class Session:
    """One played session pod: its secret, its pod, and its teardown."""

    def __init__(self, played: podlab.Played, network: str, workdir: pathlib.Path):
        self.played = played
        self.name = played.name
        self.network = network
        self.dir = workdir
        self.pod_file = workdir / "pod.yaml"
        self.pod_file.write_text(played.pod_yaml())
        self.secret = played.secret_name()
        self.down_done = False
        self.play_result: subprocess.CompletedProcess | None = None
        self.extra_pods: list[pathlib.Path] = []

    def play(self, timeout: float = 1800) -> subprocess.CompletedProcess:
        secret_file = self.dir / "secret.json"
        secret_file.write_text(self.played.secret_json())
        secret_file.chmod(0o600)
        podman("secret", "create", self.secret, str(secret_file))
        self.play_result = podman("kube", "play", "--network", self.network, str(self.pod_file),
                                  check=False, timeout=timeout)
        return self.play_result

    def container(self, c: str) -> str:
        return podlab.container_name(self.name, c)

    def stop(self) -> subprocess.CompletedProcess:
        """`podman pod stop` with the pod's terminationGracePeriodSeconds."""
        grace = self.played.pod["spec"].get("terminationGracePeriodSeconds", 30)
        return podman("pod", "stop", "--ignore", "--time", str(grace), self.name, check=False,
                      timeout=grace + 120)

    def down(self) -> subprocess.CompletedProcess:
        self.down_done = True
        return podman("kube", "down", str(self.pod_file), check=False, timeout=600)

    def cleanup(self) -> None:
        for f in self.extra_pods:
            podman("kube", "down", str(f), check=False, timeout=600)
        if not self.down_done:
            self.stop()
            self.down()
        podman("pod", "rm", "--force", "--ignore", self.name, check=False)
        if self.secret:
            podman("secret", "rm", self.secret, check=False)


@pytest.fixture
def new_session(network, tmp_path_factory):
    """Factory: new_session(values) renders, adapts and prepares a session;
    every session made is taken down and its secret removed at the end."""
    made: list[Session] = []

    def make(values: dict) -> Session:
        sid = values["session"]["id"]
        played = podlab.Played(podlab.render(values, f"lab-{sid}"))
        s = Session(played, network, tmp_path_factory.mktemp(sid))
        made.append(s)
        return s

    yield make
    for s in made:
        s.cleanup()
