"""The chart side of labs (issue 11): `lab.url` (+ `lab.sha256`) or
`lab.configMap` adds the `lab-fetch` init container (`dozlab lab fetch`), an
emptyDir `lab` the terminal serves read-only (LAB_DIR) and an emptyDir
`lab-state` for the learner's progress (LAB_STATE_DIR); without a lab none of
it is rendered. Bad settings fail `helm install` with a message naming the
key. Every rendering is validated against the Kubernetes schemas."""

from __future__ import annotations

import posixpath

import pytest

from conftest import (
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

URL = "https://labs.example.com/first-steps.tar.gz"
SHA = "0123456789ABCDEFabcdef0123456789abcdef0123456789abcdef0123456789"
LAB_VOLUMES = {"lab", "lab-state", "lab-source"}


def pod_of(values: dict) -> dict:
    objs = render_all(values)
    validate_k8s(objs)
    return the_pod(objs)


def mounted_path(c: dict, volume: str, path: str) -> bool:
    """True when `path` lies inside a mount of `volume` in container `c`."""
    return any(m["name"] == volume and (path + "/").startswith(m["mountPath"].rstrip("/") + "/")
               for m in c.get("volumeMounts", []))


def check_wiring(pod: dict, source: str) -> tuple[dict, dict]:
    """What every lab rendering shares; returns (lab-fetch, terminal)."""
    inits = pod["spec"]["initContainers"]
    assert [c["name"] for c in inits] == ["lab-fetch", "init-rootfs", "network-setup"], \
        "a bad lab fails the pod before the rootfs download"
    fetch = inits[0]
    assert fetch["command"] == ["dozlab"]
    assert fetch["args"][:3] == ["lab", "fetch", source]
    dest = fetch["args"][fetch["args"].index("--dest") + 1]
    assert posixpath.isabs(dest)
    # lab-fetch writes DEST into the `lab` volume; the terminal reads the same
    # path from the same volume, read-only, and keeps progress elsewhere.
    assert mounted_path(fetch, "lab", dest)
    assert env_of(fetch)["TMPDIR"] == "/srv/labs", "the root filesystem is read-only"
    mounts = {m["name"]: m for m in fetch["volumeMounts"]}
    assert not mounts["lab"].get("readOnly")

    term = container(pod, "terminal-sidecar")
    env = env_of(term)
    assert env["LAB_DIR"] == dest
    assert env["LAB_PREPARE"] == "true", "nothing else in the pod copies the assets in"
    assert mounted_path(term, "lab", dest)
    tmounts = {m["name"]: m for m in term["volumeMounts"]}
    assert tmounts["lab"]["readOnly"] is True
    assert "readOnly" not in tmounts["lab-state"] or tmounts["lab-state"]["readOnly"] is False
    assert mounted_path(term, "lab-state", env["LAB_STATE_DIR"])
    assert tmounts["shared-config"]["readOnly"] is True, "/shared stays read-only in the terminal"
    for c in pod["spec"]["containers"]:
        if c["name"] != "terminal-sidecar":
            assert not {m["name"] for m in c.get("volumeMounts", [])} & LAB_VOLUMES, c["name"]

    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert vols["lab"] == {"name": "lab", "emptyDir": {"sizeLimit": "64Mi"}}
    assert vols["lab-state"] == {"name": "lab-state", "emptyDir": {"sizeLimit": "1Mi"}}
    return fetch, term


def test_lab_url_and_sha256_render_the_fetch_init_container():
    pod = pod_of(minimal(lab={"url": URL, "sha256": SHA}))
    fetch, _ = check_wiring(pod, URL)
    assert fetch["args"] == ["lab", "fetch", URL, "--dest", "/srv/labs/lab", "--sha256", SHA.lower()]
    assert fetch["image"] == container(pod, "init-rootfs")["image"], "the chart's dozlab image"
    assert [m["name"] for m in fetch["volumeMounts"]] == ["lab"]
    assert "lab-source" not in {v["name"] for v in pod["spec"]["volumes"]}


def test_lab_url_without_sha256_passes_no_check_flag():
    pod = pod_of(minimal(lab={"url": "http://10.96.0.20:8000/lab.tar.gz"}))
    fetch, _ = check_wiring(pod, "http://10.96.0.20:8000/lab.tar.gz")
    assert "--sha256" not in fetch["args"]


def test_lab_config_map_is_mounted_read_only_into_lab_fetch_only():
    pod = pod_of(minimal(lab={"configMap": "first-steps-lab"}))
    fetch, term = check_wiring(pod, "/srv/lab-source")
    assert fetch["args"] == ["lab", "fetch", "/srv/lab-source", "--dest", "/srv/labs/lab"]
    mounts = {m["name"]: m for m in fetch["volumeMounts"]}
    assert mounts["lab-source"] == {"name": "lab-source", "mountPath": "/srv/lab-source", "readOnly": True}
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert vols["lab-source"] == {"name": "lab-source", "configMap": {"name": "first-steps-lab"}}
    assert "lab-source" not in {m["name"] for m in term["volumeMounts"]}


@pytest.mark.parametrize("lab", [None, {}, {"url": "", "sha256": "", "configMap": ""}])
def test_without_a_lab_nothing_is_rendered(lab):
    values = minimal() if lab is None else minimal(lab=lab)
    pod = pod_of(values)
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["init-rootfs", "network-setup"]
    assert not {v["name"] for v in pod["spec"]["volumes"]} & LAB_VOLUMES
    term = container(pod, "terminal-sidecar")
    assert not {"LAB_DIR", "LAB_STATE_DIR", "LAB_PREPARE"} & set(env_of(term))
    assert term["volumeMounts"] == [{"name": "shared-config", "mountPath": "/shared", "readOnly": True}]
    notes = helm_install(values)["notes"]
    assert "lab-fetch" not in notes


def test_lab_fetch_runs_unprivileged_with_a_read_only_root():
    pod = pod_of(minimal(lab={"url": URL}))
    ctx = container(pod, "lab-fetch")["securityContext"]
    assert ctx == {
        "runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True,
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # uid 1000 writes into the emptyDir thanks to fsGroup 1000, which also
    # lets the terminal (uid 0, no capability) read what it wrote.
    assert pod["spec"]["securityContext"]["fsGroup"] == 1000


def test_lab_fetch_image_resources_and_env_are_values():
    pod = pod_of(minimal(
        imageRegistry="registry.example.com",
        lab={"url": URL, "fetch": {
            "image": {"repository": "myorg/dozlab", "tag": "1.2.3", "pullPolicy": "Always"},
            "resources": {"limits": {"memory": "512Mi"}},
            "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        }}))
    fetch = container(pod, "lab-fetch")
    assert fetch["image"] == "registry.example.com/myorg/dozlab:1.2.3"
    assert fetch["imagePullPolicy"] == "Always"
    assert fetch["resources"]["limits"]["memory"] == "512Mi"
    assert env_of(fetch)["HTTPS_PROXY"] == "http://proxy:3128"


def test_volume_sizes_are_values():
    pod = pod_of(minimal(lab={"configMap": "l"}, volumes={"lab": {"sizeLimit": "256Mi"},
                                                         "labState": {"sizeLimit": "2Mi"}}))
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert vols["lab"]["emptyDir"]["sizeLimit"] == "256Mi"
    assert vols["lab-state"]["emptyDir"]["sizeLimit"] == "2Mi"


@pytest.mark.parametrize("lab,key", [
    ({"url": "ftp://labs.example.com/lab.tar.gz"}, "/lab/url"),
    ({"url": "file:///srv/lab.tar.gz"}, "/lab/url"),
    ({"url": "labs.example.com/lab.tar.gz"}, "/lab/url"),
    ({"url": "https://"}, "/lab/url"),
    ({"url": URL, "sha256": "abc"}, "/lab/sha256"),
    ({"url": URL, "sha256": "g" * 64}, "/lab/sha256"),
    ({"url": URL, "sha256": SHA + "0"}, "/lab/sha256"),
    ({"configMap": "My_Lab"}, "/lab/configMap"),
    ({"url": URL, "token": "x"}, "token"),
])
def test_bad_lab_values_are_refused_naming_the_key(lab, key):
    msg = schema_error(minimal(lab=lab))
    assert key in msg, msg


@pytest.mark.parametrize("values,words", [
    (minimal(lab={"url": URL, "configMap": "first-steps-lab"}),
     "lab.url and lab.configMap are both set: keep one"),
    (minimal(lab={"configMap": "first-steps-lab", "sha256": SHA}),
     "lab.sha256 is set without lab.url"),
    (minimal(lab={"url": URL}, networkPolicy={"allowInternetEgress": False}),
     "lab.url cannot be downloaded: the NetworkPolicy allows no egress"),
])
def test_conflicting_lab_settings_fail_with_a_message(values, words):
    msg = schema_error(values)
    assert words in msg, msg


def test_network_policy_lets_lab_fetch_download_the_lab():
    """lab-fetch is bound by the pod's NetworkPolicy, like init-rootfs: the
    default internet egress carries a public lab.url; an in-cluster lab
    server needs a peer in egressTo; a ConfigMap needs no egress at all."""
    objs = render_all(minimal(lab={"url": URL}))
    pol = one(objs, "NetworkPolicy")
    assert any(t.get("ipBlock", {}).get("cidr") == "0.0.0.0/0"
               for e in pol["spec"]["egress"] for t in e.get("to", []))
    peer = {"podSelector": {"matchLabels": {"app": "lab-server"}}}
    objs = render_all(minimal(lab={"url": "http://lab-server.labs.svc:8000/lab.tar.gz"},
                              networkPolicy={"allowInternetEgress": False, "egressTo": [peer]}))
    validate_k8s(objs)
    pol = one(objs, "NetworkPolicy")
    assert {"to": [peer]} in pol["spec"]["egress"]
    closed = minimal(lab={"configMap": "first-steps-lab"},
                     networkPolicy={"allowInternetEgress": False, "allowDns": False})
    objs = render_all(closed)
    validate_k8s(objs)
    assert one(objs, "NetworkPolicy")["spec"]["egress"] == []
    # Without a NetworkPolicy nothing is checked.
    pod_of(minimal(lab={"url": URL}, networkPolicy={"enabled": False, "allowInternetEgress": False}))


def test_notes_name_the_lab_and_the_fetch_logs():
    notes = helm_install(minimal(lab={"url": URL}))["notes"]
    assert URL in notes
    assert "kubectl logs -n default lab-session-alice-001 -c lab-fetch" in notes
    notes = helm_install(minimal(lab={"configMap": "first-steps-lab"}))["notes"]
    assert "ConfigMap first-steps-lab" in notes and "-c lab-fetch" in notes
