"""The chart's lab wiring (issue 11) with the real programs and exactly the
identities the chart renders (as test_privileges.py does for the other
containers, via `setpriv`): `lab-fetch` (uid 1000, no capability) runs
`dozlab lab fetch` into a directory made like the pod's `lab` emptyDir
(fsGroup 1000), then the terminal (uid 0, no capability, fsGroup as a
supplementary group) serves what it wrote and answers `GET /api/lab`, its
progress on a `lab-state` emptyDir. Sources: a ConfigMap-like mount (keys as
symlinks into `..data`, as the kubelet makes them) and a .tar.gz served on
loopback whose author's umask was 077 (files 0600, scripts 0700).
Needs root and `setpriv`.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time

import pytest

from conftest import ROOT, container, env_of, minimal, render_all, the_pod
from test_privileges import empty_dir, identity, run, world_tmp  # noqa: F401 (fixture)

sys.path.insert(0, str(ROOT / "tests" / "pod"))
import probe  # noqa: E402

LABS = ROOT / "labs" / "examples"
PASSWORD = "lab-privileges-password"


def needs():
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip(f"needs root and setpriv (euid {os.geteuid()})")


def config_map_mount(src: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
    """A directory as the kubelet mounts a ConfigMap: each key a symlink to
    ..data/KEY, ..data a symlink to a timestamped directory of 0644 files."""
    dest.mkdir()
    stamp = dest / "..2026_12_02_08_00_00.000000001"
    stamp.mkdir()
    for p in sorted(src.iterdir()):
        if p.is_file():
            shutil.copyfile(p, stamp / p.name)
            os.chmod(stamp / p.name, 0o644)
            os.symlink(f"..data/{p.name}", dest / p.name)
    os.chmod(stamp, 0o755)
    os.symlink(stamp.name, dest / "..data")
    os.chmod(dest, 0o755)
    return dest


def umask077_tar_gz(lab: pathlib.Path) -> bytes:
    """The lab as a .tar.gz made under umask 077: directories 0700, files
    0600, scripts 0700."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in sorted(lab.rglob("*")):
            info = tar.gettarinfo(str(p), arcname=str(p.relative_to(lab)))
            info.uid = info.gid = 1234
            info.uname = info.gname = "author"
            if p.is_dir():
                info.mode = 0o700
                tar.addfile(info)
            else:
                info.mode = 0o700 if p.suffix == ".sh" else 0o600
                with open(p, "rb") as f:
                    tar.addfile(info, f)
    return buf.getvalue()


class Loopback:
    """An HTTP server on 127.0.0.1 serving one body at /lab.tar.gz."""

    def __init__(self, body: bytes):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if self.path != "/lab.tar.gz":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/lab.tar.gz"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch_then_serve(pod: dict, dozlab: pathlib.Path, tmp: pathlib.Path, source: str) -> dict:
    """Runs lab-fetch's command with its identity, then the terminal with
    its identity on the result; returns GET /api/lab's JSON."""
    fs_group = pod["spec"]["securityContext"]["fsGroup"]
    fetch = container(pod, "lab-fetch")
    labs = empty_dir(tmp / "labs", fs_group)
    state = empty_dir(tmp / "lab-state", fs_group)
    # The rendered arguments, with the pod's paths moved under tmp.
    args = [a.replace("/srv/labs", str(labs)) for a in fetch["args"]]
    args[2] = source
    env = {"PATH": os.environ["PATH"], "TMPDIR": str(labs)}
    out = run(identity(pod, "lab-fetch") + [str(dozlab)] + args, env=env)
    assert out.returncode == 0, f"lab fetch {args}: {out.stdout}{out.stderr}"
    dest = labs / "lab"
    assert (dest / "index.json").is_file()
    for p in dest.rglob("*"):
        assert p.lstat().st_uid == 1000, f"{p} is lab-fetch's (uid 1000)"

    term = container(pod, "terminal-sidecar")
    tenv = env_of(term)
    assert tenv["LAB_DIR"] == "/srv/labs/lab"
    port = free_port()
    env = {"PATH": os.environ["PATH"], "TERMINAL_PASSWORD": PASSWORD,
           "LAB_DIR": str(dest), "LAB_STATE_DIR": str(state), "SESSION_ID": "alice-001",
           "LAB_PREPARE": tenv["LAB_PREPARE"],
           "SSH_KEY_PATH": str(tmp / "no-vm-key"), "KNOWN_HOSTS_PATH": str(tmp / "no-known-hosts")}
    log = open(tmp / "terminal.log", "w")
    proc = subprocess.Popen(identity(pod, "terminal-sidecar") +
                            [str(dozlab), "terminal", "--listen", f"127.0.0.1:{port}"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        got = None
        for _ in range(100):
            if proc.poll() is not None:
                break
            try:
                got = probe.lab(f"http://127.0.0.1:{port}", PASSWORD)
                break
            except OSError:
                time.sleep(0.2)
        tlog = (tmp / "terminal.log").read_text()
        assert got and got["ok"], f"{got}\n{tlog[-3000:]}"
        assert got["json"]["progress"]["current"] == 0, got["json"]["progress"]
        # LAB_PREPARE as rendered is accepted: the set-up waits for the VM (none here).
        assert got["json"]["progress"]["setup"]["state"] == "waiting", got["json"]["progress"]
        progress = state / "lab-progress-alice-001.json"
        assert progress.exists(), "the terminal keeps the progress on the lab-state volume"
        assert progress.stat().st_uid == 0
        return got["json"]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()


def test_a_config_map_lab_is_fetched_by_uid_1000_and_served_by_the_terminal(dozlab_bin, world_tmp):
    needs()
    pod = the_pod(render_all(minimal(lab={"configMap": "hello-file"})))
    source = config_map_mount(LABS / "hello-file", world_tmp / "lab-source")
    got = fetch_then_serve(pod, dozlab_bin, world_tmp, str(source))
    assert got["lab"]["title"] == "Hello, file"
    assert [p["id"]["kind"] for p in got["lab"]["pages"]] == ["intro", "step", "finish"]


def test_a_url_lab_packed_under_umask_077_is_still_readable_by_the_terminal(dozlab_bin, world_tmp):
    needs()
    body = umask077_tar_gz(LABS / "toolbox")
    with Loopback(body) as server:
        pod = the_pod(render_all(minimal(lab={"url": server.url,
                                              "sha256": hashlib.sha256(body).hexdigest()})))
        assert container(pod, "lab-fetch")["args"][2] == server.url
        got = fetch_then_serve(pod, dozlab_bin, world_tmp, server.url)
    assert got["lab"]["title"] == "A small toolbox"
    # lab fetch made every file readable by all: the terminal is another user.
    for p in (world_tmp / "labs" / "lab").rglob("*"):
        assert p.stat().st_mode & 0o444 == 0o444, f"{p}: {oct(p.stat().st_mode)}"
