"""`dozlab classroom render` and `dozlab session values` output, fed to the
real chart: every generated HelmRelease holds the CRD's required fields, its
values install with the chart and validate, and no password reaches it."""

from __future__ import annotations

import base64
import csv
import stat
import subprocess

import pytest
import yaml

from conftest import container, env_of, helm_install, one, render_all, the_pod, validate_k8s
from test_fluxcd import check_helmrelease

ROSTER = """id,user,name,email
Alice,alice@example.com,Alice A,alice@example.com
Bob_Smith,,Bob Smith,
# a comment line
charlie,charlie,,
"""


def run(bin_path, *args, cwd):
    return subprocess.run([str(bin_path), *map(str, args)], cwd=cwd, capture_output=True, text=True)


def test_classroom_render_output_installs_and_validates(dozlab_bin, tmp_path):
    (tmp_path / "r.csv").write_text(ROSTER)
    out = tmp_path / "out"
    res = run(dozlab_bin, "classroom", "render", "--roster", "r.csv", "--image-url",
              "https://example.com/dozlab-k8s.ext4", "--out", out, "--course", "kubernetes-101",
              "--cohort", "2024-spring", "--chart-source", "dozlab-infra", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    creds = list(csv.DictReader((out / "credentials.csv").open()))
    assert stat.S_IMODE((out / "credentials.csv").stat().st_mode) == 0o600
    assert [c["session_id"] for c in creds] == [
        "kubernetes-101-alice", "kubernetes-101-bob-smith", "kubernetes-101-charlie"]
    releases = sorted((out / "helmreleases").glob("*.yaml"))
    assert len(releases) == 3
    for path, cred in zip(sorted(releases), sorted(creds, key=lambda c: c["pod"])):
        text = path.read_text()
        assert cred["password"] not in text, "the password must never be in the HelmRelease"
        hr = yaml.safe_load(text)
        check_helmrelease(hr)
        assert hr["metadata"]["name"] == cred["pod"] == path.stem
        values = hr["spec"]["values"]
        objs = helm_install(values, release=hr["spec"]["releaseName"])["objects"]
        validate_k8s(objs + render_all(values, release=hr["spec"]["releaseName"]))
        pod = the_pod(objs)
        assert pod["metadata"]["name"] == cred["pod"]
        assert pod["metadata"]["labels"]["course"] == "kubernetes-101"
        assert pod["metadata"]["labels"]["cohort"] == "2024-spring"
        assert [o for o in objs if o["kind"] == "Secret"] == []
        secret_path = out / "secrets" / f"{cred['pod']}-secrets.yaml"
        assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
        secret = yaml.safe_load(secret_path.read_text())
        validate_k8s([secret])
        ref = env_of(container(pod, "code-server"))["PASSWORD"]["secretKeyRef"]
        assert ref == {"name": secret["metadata"]["name"], "key": "vscode-password"}
        assert secret["stringData"]["vscode-password"] == cred["password"]
        assert len(cred["password"]) >= 32


def test_bad_roster_names_lines_and_writes_nothing(dozlab_bin, tmp_path):
    (tmp_path / "r.csv").write_text("id,user\nalice,a\nbob,b\nALICE,c\n???,d\n")
    res = run(dozlab_bin, "classroom", "render", "--roster", "r.csv", "--image-url",
              "https://example.com/x.ext4", "--out", "out", cwd=tmp_path)
    assert res.returncode == 2
    assert "line 4: id \"ALICE\" becomes \"alice\", already used by line 2" in res.stderr
    assert "line 5: id \"???\"" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]


def test_session_values_file_installs(dozlab_bin, tmp_path):
    res = run(dozlab_bin, "session", "values", "--id", "my-session", "--user", "my-user",
              "--image-url", "https://example.com/rootfs.ext4", "--out", "v.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    path = tmp_path / "v.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = yaml.safe_load(path.read_text())
    objs = helm_install(values, release="lab-my-session")["objects"]
    validate_k8s(objs)
    secret = one(objs, "Secret", "lab-session-my-session-secrets")
    password = base64.b64decode(secret["data"]["vscode-password"]).decode()
    assert password == values["codeServer"]["password"] and len(password) >= 32


LAB_URL = "https://labs.example.com/first-steps.tar.gz"
LAB_SHA = "AB" * 32


def test_classroom_render_with_a_lab_gives_every_student_the_lab(dozlab_bin, tmp_path):
    (tmp_path / "r.csv").write_text(ROSTER)
    out = tmp_path / "out"
    res = run(dozlab_bin, "classroom", "render", "--roster", "r.csv", "--image-url",
              "https://example.com/dozlab-k8s.ext4", "--out", out, "--lab", LAB_URL,
              "--lab-sha256", LAB_SHA, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    releases = sorted((out / "helmreleases").glob("*.yaml"))
    assert len(releases) == 3
    for path in releases:
        hr = yaml.safe_load(path.read_text())
        check_helmrelease(hr)
        values = hr["spec"]["values"]
        assert values["lab"] == {"url": LAB_URL, "sha256": LAB_SHA.lower()}
        objs = helm_install(values, release=hr["spec"]["releaseName"])["objects"]
        validate_k8s(objs)
        pod = the_pod(objs)
        fetch = container(pod, "lab-fetch")
        assert fetch["args"] == ["lab", "fetch", LAB_URL, "--dest", "/srv/labs/lab",
                                 "--sha256", LAB_SHA.lower()]
        assert env_of(container(pod, "terminal-sidecar"))["LAB_DIR"] == "/srv/labs/lab"


def test_classroom_render_without_a_lab_renders_no_lab(dozlab_bin, tmp_path):
    (tmp_path / "r.csv").write_text("id\nalice\n")
    res = run(dozlab_bin, "classroom", "render", "--roster", "r.csv", "--image-url",
              "https://example.com/x.ext4", "--out", "out", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    hr = yaml.safe_load((tmp_path / "out/helmreleases/lab-session-alice.yaml").read_text())
    assert "lab" not in hr["spec"]["values"]
    pod = the_pod(helm_install(hr["spec"]["values"], release="lab-alice")["objects"])
    assert "lab-fetch" not in [c["name"] for c in pod["spec"]["initContainers"]]


@pytest.mark.parametrize("flags,words", [
    (["--lab", "file:///srv/lab.tar.gz"], "--lab \"file:///srv/lab.tar.gz\" is not an http:// or https:// URL"),
    (["--lab", "labs.example.com/lab.tar.gz"], "is not an http:// or https:// URL"),
    (["--lab", LAB_URL, "--lab-sha256", "abc"], "--lab-sha256 \"abc\" is not 64 hexadecimal digits"),
    (["--lab-sha256", LAB_SHA], "--lab-sha256 needs --lab"),
])
def test_classroom_render_refuses_bad_lab_flags_and_writes_nothing(dozlab_bin, tmp_path, flags, words):
    (tmp_path / "r.csv").write_text("id\nalice\n")
    res = run(dozlab_bin, "classroom", "render", "--roster", "r.csv", "--image-url",
              "https://example.com/x.ext4", "--out", "out", *flags, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert words in res.stderr, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]


def test_session_values_with_a_lab_installs(dozlab_bin, tmp_path):
    res = run(dozlab_bin, "session", "values", "--id", "my-session", "--user", "my-user",
              "--image-url", "https://example.com/rootfs.ext4", "--lab", LAB_URL, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    values = yaml.safe_load(res.stdout)
    assert values["lab"] == {"url": LAB_URL}
    pod = the_pod(helm_install(values, release="lab-my-session")["objects"])
    assert container(pod, "lab-fetch")["args"][:3] == ["lab", "fetch", LAB_URL]
    res = run(dozlab_bin, "session", "values", "--id", "my-session", "--user", "my-user",
              "--image-url", "https://example.com/rootfs.ext4", "--lab-sha256", LAB_SHA, cwd=tmp_path)
    assert res.returncode == 2 and "--lab-sha256 needs --lab" in res.stderr, res.stderr
