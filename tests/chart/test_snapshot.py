"""The chart side of snapshots (issue 13): `snapshot.enabled` gives the VM
container `SNAPSHOT`, `SNAPSHOT_CACHE` and `IMAGE_SHA256` (read by `dozlab vm
run`, docs/snapshot.md) and a node-local hostPath cache mounted at that path;
off by default, when nothing of it is rendered. Settings that cannot work
(Firecracker, no rootfs.sha256, a bad mode or path) fail `helm install` with a
message naming the key. Every rendering is validated against the Kubernetes
schemas."""

from __future__ import annotations

import pytest

from conftest import container, env_of, minimal, render_all, schema_error, the_pod, validate_k8s

SHA = "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
SNAP_ENV = {"SNAPSHOT", "SNAPSHOT_CACHE", "IMAGE_SHA256"}


def values(**snapshot) -> dict:
    v = minimal(vmm="qemu", snapshot={"enabled": True, **snapshot})
    v["rootfs"]["sha256"] = SHA
    return v


def pod_of(v: dict) -> dict:
    objs = render_all(v)
    validate_k8s(objs)
    return the_pod(objs)


def test_enabled_wires_the_vm_container_to_a_node_local_cache():
    pod = pod_of(values())
    vm = container(pod, "firecracker-vm")
    env = env_of(vm)
    assert env["SNAPSHOT"] == "auto"
    assert env["IMAGE_SHA256"] == SHA.lower(), "the digest keys the cache, written as vm run reads it"
    mounts = {m["name"]: m for m in vm["volumeMounts"]}
    assert mounts["snapshot-cache"]["mountPath"] == env["SNAPSHOT_CACHE"]
    assert not mounts["snapshot-cache"].get("readOnly"), "the first session writes the snapshot"
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert vols["snapshot-cache"]["hostPath"] == {
        "path": "/var/cache/dozlab/snapshots", "type": "DirectoryOrCreate"}
    # No other container sees the cache: it holds a booted VM's memory.
    others = [c["name"] for c in pod["spec"]["containers"] + pod["spec"]["initContainers"]
              if c["name"] != "firecracker-vm"
              and any(m["name"] == "snapshot-cache" for m in c.get("volumeMounts", []))]
    assert others == []


def test_mode_and_host_path_are_passed():
    pod = pod_of(values(mode="refresh", hostPath="/srv/dozlab/snap"))
    assert env_of(container(pod, "firecracker-vm"))["SNAPSHOT"] == "refresh"
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert vols["snapshot-cache"]["hostPath"]["path"] == "/srv/dozlab/snap"


@pytest.mark.parametrize("snapshot", [None, {"enabled": False}])
def test_off_by_default_renders_nothing_of_it(snapshot):
    v = minimal(vmm="qemu")
    if snapshot is not None:
        v["snapshot"] = snapshot
    pod = pod_of(v)
    assert not SNAP_ENV & set(env_of(container(pod, "firecracker-vm")))
    assert "snapshot-cache" not in {v["name"] for v in pod["spec"]["volumes"]}


@pytest.mark.parametrize("change, needle", [
    (lambda v: v.update(vmm="firecracker"), "snapshot.enabled needs vmm: qemu"),
    (lambda v: v["rootfs"].pop("sha256"), "snapshot.enabled needs rootfs.sha256"),
    (lambda v: v["snapshot"].update(mode="always"), "/snapshot/mode"),
    (lambda v: v["snapshot"].update(hostPath="var/cache"), "/snapshot/hostPath"),
    (lambda v: v["snapshot"].update(size="1Gi"), "/snapshot"),
])
def test_settings_that_cannot_work_are_refused_by_name(change, needle):
    v = values()
    change(v)
    assert needle in schema_error(v)
