"""The images, built for real with `./scripts/build-images` (Podman, no
registry): sizes, labels, users and entrypoints; Firecracker added from a
release archive checked by SHA-256, and the builds that must stop.

The Firecracker "release" here is a stand-in archive holding two small
scripts named like a release's binaries, served on loopback: the real
release cannot be downloaded on these machines (no internet); what is tested
is the build's download, checksum and install logic.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import re
import secrets
import subprocess
import tarfile
import threading

import pytest

import podlab
from podlab import podman

BUILD = str(podlab.ROOT / "scripts" / "build-images")
MiB = 1024 * 1024


def label(ref: str, key: str) -> str:
    return podman("image", "inspect", "--format", f'{{{{index .Labels "{key}"}}}}', ref).stdout.strip()


def config(ref: str) -> dict:
    return json.loads(podman("image", "inspect", "--format", "{{json .Config}}", ref).stdout)


def test_build_images_prints_what_it_built_with_sizes(images):
    out = images["built"]
    for name in ("dozlab", "dozlab-vm", "code-server"):
        assert images[name] in out, out
    assert "MiB" in out and "VMMs: qemu" in out, out


def test_dozlab_image_is_small_and_runs_the_binary_as_uid_1000(images):
    ref = images["dozlab"]
    size = int(podman("image", "inspect", "--format", "{{.Size}}", ref).stdout)
    assert size <= 100 * MiB, f"{ref} is {size / MiB:.1f} MiB, the goal is at most 100 MiB"
    cfg = config(ref)
    assert cfg["Entrypoint"] == ["dozlab"] and cfg["User"] == "1000:1000", cfg
    r = podman("run", "--rm", "--network", "none", ref, "--version")
    assert r.stdout.startswith("dozlab "), r.stdout
    tools = podman("run", "--rm", "--network", "none", "--entrypoint", "sh", ref, "-c",
                   "command -v nft e2fsck resize2fs && test -s /etc/ssl/certs/ca-certificates.crt")
    assert tools.stdout.count("/") >= 3, tools.stdout


def test_vm_image_without_a_release_is_qemu_only_and_says_so(images):
    ref = images["dozlab-vm"]
    assert label(ref, "io.dozlab.vmms") == "qemu"
    assert label(ref, "io.dozlab.firecracker").startswith("none: QEMU-only image")
    cfg = config(ref)
    assert cfg["Entrypoint"] == ["dozlab"] and cfg["User"] in ("0:0", "0"), cfg
    r = podman("run", "--rm", "--network", "none", "--entrypoint", "sh", ref, "-c",
               "qemu-system-x86_64 --version && command -v debugfs lz4 && ! command -v firecracker")
    assert "QEMU emulator" in r.stdout, r.stdout


def test_code_server_image_has_node_20_code_server_and_a_docker_cli(images):
    ref = images["code-server"]
    cfg = config(ref)
    assert cfg["Entrypoint"] == ["/usr/bin/tini", "--", "code-server"] and cfg["User"] == "1000:1000", cfg
    r = podman("run", "--rm", "--network", "none", "--entrypoint", "sh", ref, "-c",
               "node --version && code-server --version && docker --version && test -w /workspace")
    assert re.search(r"^v20\.", r.stdout, re.M), r.stdout
    assert re.search(r"^4\.96\.\d+ ", r.stdout, re.M), r.stdout
    assert "Docker version" in r.stdout, r.stdout


# ---- Firecracker from a release archive ------------------------------------------


def fake_release(version: str = "v1.99.0") -> bytes:
    """A .tgz laid out like a Firecracker release: release-VER-x86_64/{firecracker,jailer}-VER-x86_64."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for tool in ("firecracker", "jailer"):
            body = f"#!/bin/sh\necho '{tool.capitalize()} {version}'\n".encode()
            info = tarfile.TarInfo(f"release-{version}-x86_64/{tool}-{version}-x86_64")
            info.size, info.mode = len(body), 0o755
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue()


@pytest.fixture
def release_server(tmp_path):
    """The archive over HTTP on 127.0.0.1 (the build runs with --network host)."""
    data = fake_release()
    (tmp_path / "firecracker.tgz").write_bytes(data)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/firecracker.tgz", hashlib.sha256(data).hexdigest()
    srv.shutdown()


@pytest.fixture
def scratch_tag(images):
    """A tag of our own for builds that must not touch the real images; removed after."""
    tag = f"podtest-{secrets.token_hex(3)}"
    yield tag
    podman("rmi", "--force", f"dozlab/dozlab-vm:{tag}", check=False)


def build_vm(tag: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [BUILD, "--only", "dozlab-vm", "--tag", tag, *args]
    import os

    if os.environ.get("DOZLAB_RELEASE_BIN"):
        cmd += ["--binary", os.environ["DOZLAB_RELEASE_BIN"]]
    return subprocess.run(cmd, env=podlab.env(), capture_output=True, text=True, timeout=1800)


def test_a_firecracker_release_is_verified_and_installed(release_server, scratch_tag):
    url, sha = release_server
    r = build_vm(scratch_tag, "--firecracker-url", url, "--firecracker-sha256", sha)
    assert r.returncode == 0, r.stderr[-3000:]
    ref = f"dozlab/dozlab-vm:{scratch_tag}"
    assert label(ref, "io.dozlab.vmms") == "qemu firecracker"
    assert label(ref, "io.dozlab.firecracker") == url
    out = podman("run", "--rm", "--network", "none", "--entrypoint", "sh", ref, "-c",
                 "firecracker; jailer; qemu-system-x86_64 --version").stdout
    assert "Firecracker v1.99.0" in out and "Jailer v1.99.0" in out and "QEMU" in out, out


def test_a_wrong_firecracker_sha256_stops_the_build_with_the_reason(release_server, scratch_tag):
    url, sha = release_server
    wrong = hashlib.sha256(b"not the archive").hexdigest()
    r = build_vm(scratch_tag, "--firecracker-url", url, "--firecracker-sha256", wrong)
    assert r.returncode == 1, r.stderr
    assert f"has sha256 {sha} but FIRECRACKER_SHA256 is {wrong}: refusing it" in r.stderr, r.stderr[-3000:]
    assert podman("image", "exists", f"dozlab/dozlab-vm:{scratch_tag}", check=False).returncode != 0


def test_half_a_firecracker_release_or_a_bad_hash_is_a_usage_error(scratch_tag):
    r = build_vm(scratch_tag, "--firecracker-url", "http://127.0.0.1:9/x.tgz")
    assert r.returncode == 2 and "give both --firecracker-url and --firecracker-sha256" in r.stderr, r.stderr
    r = build_vm(scratch_tag, "--firecracker-url", "http://127.0.0.1:9/x.tgz", "--firecracker-sha256", "abc")
    assert r.returncode == 2 and "must be 64 hex digits" in r.stderr, r.stderr


def test_a_missing_prebuilt_binary_stops_the_build_with_the_reason(tmp_path, images):
    missing = tmp_path / "no-such-dozlab"
    r = subprocess.run([BUILD, "--only", "dozlab", "--tag", "podtest-missing", "--binary", str(missing)],
                       env=podlab.env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 2, r.stderr
    assert f"prebuilt dozlab binary '{missing}' not found" in r.stderr, r.stderr
    assert "cargo build --release --bin dozlab" in r.stderr and "--compile" in r.stderr, r.stderr
    assert podman("image", "exists", "dozlab/dozlab:podtest-missing", check=False).returncode != 0
    not_elf = tmp_path / "dozlab"
    not_elf.write_text("#!/bin/sh\necho hi\n")
    not_elf.chmod(0o755)
    r = subprocess.run([BUILD, "--only", "dozlab", "--tag", "podtest-missing", "--binary", str(not_elf)],
                       env=podlab.env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "is not an ELF executable" in r.stderr, r.stderr
