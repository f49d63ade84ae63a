"""The chart's session pod on one machine with Podman: render the chart with
the real Helm engine, adapt what Podman 4.3 cannot take, play it, look into
it, and take it down. Used by tests/pod (pytest) and bench/pod.

Every Podman command goes through `podman()`, with CONTAINERS_CONF set to
tests/pod/containers.conf unless the caller set one (runc, ulimits inside the
host's limits, no registry pulls).

As a command (`.venv/bin/python tests/pod/podlab.py render VALUES.yaml OUTDIR`)
it writes what `podman kube play` takes: OUTDIR/pod.yaml, OUTDIR/secret.json
(the podman secret's content), OUTDIR/test-pod.yaml (the chart's `helm test`
pod) and prints the adaptations it made; docs/chart.md shows the commands.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import pathlib
import subprocess
import sys
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "dozlab-session"
HERE = pathlib.Path(__file__).resolve().parent
PROBE = HERE / "probe.py"
CONTAINERS_CONF = HERE / "containers.conf"

# What Podman 4.3's `kube play` cannot take, and what this module does
# instead. Each entry: (what Podman lacks, the adaptation). The same list is
# in docs/chart.md ("Try the chart on one machine with Podman").
ADAPTATIONS = [
    ("a Secret document in the played YAML fails (\"not valid JSON\"): Podman looks a secretKeyRef up "
     "in a podman secret whose content is a JSON map of key -> base64 value",
     "the Secret is removed from the YAML and created with `podman secret create NAME secret.json`"),
    ("Services are not played",
     "the Service is dropped; the `helm test` pod reaches lab-service-<id> through a hostAliases "
     "entry with the session pod's IP"),
    ("probes become healthchecks driven by systemd timers (none on these machines)",
     "startup/readiness/liveness probes are removed from the played pod; the test runs each one "
     "itself as declared (httpGet from the pod's network namespace, exec with `podman exec`)"),
    ("a fieldRef to status.podIP is refused (\"fieldPath status.podIP is either not valid or not supported\")",
     "network-setup's POD_IP env is dropped: network-setup then takes the uplink's address, "
     "which is the pod IP"),
    ("an emptyDir becomes a named volume called after the volume, shared by every pod that uses the name",
     "each volume is renamed <pod name>-<volume> so two pods on one machine never share a disk"),
    ("init containers are removed once they succeed, logs included",
     "the pod gets the annotation io.podman.annotations.init.container.type=always so their "
     "logs stay readable until `podman kube down`"),
    ("`podman kube down` kills the containers at once (no SIGTERM), and terminationGracePeriodSeconds "
     "is not applied (every container gets Podman's 10 s stop timeout)",
     "the pod is stopped first with `podman pod stop --time <terminationGracePeriodSeconds>` "
     "(SIGTERM, then the grace period), then removed with `podman kube down`"),
    ("a containerPort without hostPort is published on the host at the same port on every address "
     "(0.0.0.0:8081 ...): a second pod, or `dozlab up` on the same machine, makes `kube play` fail "
     "(\"address already in use\"), and the session is open to the host's networks",
     "`ports` are removed from the played containers; the tests reach the pod at its IP "
     "(the rendered ports stay in the rendered pod)"),
]
# Fields Podman 4.3 accepts and ignores (left in the YAML, not enforced here):
IGNORED = [
    "activeDeadlineSeconds (session.ttl)",
    "emptyDir sizeLimit",
    "resources.requests (limits on memory and cpu are applied)",
    "fsGroup (a new volume is owned by the first container that mounts it)",
]


def chart_app_version() -> str:
    return yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]


def env() -> dict:
    e = dict(os.environ)
    e.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return e


def podman(*args: str, check: bool = True, timeout: float | None = 600, **kw) -> subprocess.CompletedProcess:
    """`podman ARGS`, text output captured; raises with stderr on failure when `check`."""
    r = subprocess.run(["podman", *args], env=env(), capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


# ---- render and adapt -------------------------------------------------------------


def render(values: dict, release: str, namespace: str = "default") -> list[dict]:
    """Every template of the chart, hooks included, rendered by the real Helm engine."""
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        out = chart.render(values, name=release, namespace=namespace, is_install=True)
    docs = []
    for name, text in out.items():
        if not name.endswith("NOTES.txt"):
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


class Played:
    """What `podman kube play` takes for one rendered session."""

    def __init__(self, docs: list[dict]):
        self.rendered = docs
        pods = [d for d in docs if d["kind"] == "Pod"]
        self.pod_rendered = next(p for p in pods if not _is_hook(p))
        self.test_rendered = next((p for p in pods if _is_hook(p)), None)
        self.secret = next((d for d in docs if d["kind"] == "Secret"), None)
        self.services = [d for d in docs if d["kind"] == "Service"]
        self.name = self.pod_rendered["metadata"]["name"]
        self.pod = adapt_pod(self.pod_rendered)

    def pod_yaml(self) -> str:
        return yaml.safe_dump(self.pod, sort_keys=False)

    def secret_name(self) -> str | None:
        return self.secret["metadata"]["name"] if self.secret else None

    def secret_json(self) -> str:
        """The podman secret's content: the Secret's data, key -> base64 value."""
        data = dict(self.secret.get("data") or {})
        for k, v in (self.secret.get("stringData") or {}).items():
            data[k] = base64.b64encode(v.encode()).decode()
        return json.dumps(data)

    def test_pod_yaml(self, pod_ip: str) -> str:
        """The chart's `helm test` pod, with the Service name pointing at the pod."""
        t = copy.deepcopy(self.test_rendered)
        t["metadata"].get("annotations", {}).pop("helm.sh/hook", None)
        t["metadata"].get("annotations", {}).pop("helm.sh/hook-delete-policy", None)
        names = [s["metadata"]["name"] for s in self.services]
        t["spec"]["hostAliases"] = [{"ip": pod_ip, "hostnames": names}]
        return yaml.safe_dump(t, sort_keys=False)


def _is_hook(doc: dict) -> bool:
    return "helm.sh/hook" in (doc["metadata"].get("annotations") or {})


def adapt_pod(rendered: dict) -> dict:
    """The rendered session pod with the ADAPTATIONS applied (a copy)."""
    pod = copy.deepcopy(rendered)
    name = pod["metadata"]["name"]
    pod["metadata"].setdefault("annotations", {})["io.podman.annotations.init.container.type"] = "always"
    spec = pod["spec"]
    renames = {v["name"]: f"{name}-{v['name']}" for v in spec.get("volumes", [])}
    for v in spec.get("volumes", []):
        v["name"] = renames[v["name"]]
    for c in spec.get("initContainers", []) + spec["containers"]:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            c.pop(probe, None)
        c.pop("ports", None)
        c["env"] = [e for e in c.get("env", [])
                    if (e.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") != "status.podIP"]
        for m in c.get("volumeMounts", []):
            m["name"] = renames.get(m["name"], m["name"])
    return pod


# ---- a played pod ------------------------------------------------------------------


def container_name(pod: str, container: str) -> str:
    """The Podman name of a pod's container (kube play's naming)."""
    return f"{pod}-{container}"


def infra_pid(pod: str) -> int:
    infra = podman("pod", "inspect", "--format", "{{.InfraContainerID}}", pod).stdout.strip()
    return int(podman("inspect", "--format", "{{.State.Pid}}", infra).stdout.strip())


def pod_ip(pod: str, network: str) -> str:
    infra = podman("pod", "inspect", "--format", "{{.InfraContainerID}}", pod).stdout.strip()
    nets = json.loads(podman("inspect", "--format", "{{json .NetworkSettings.Networks}}", infra).stdout)
    return nets[network]["IPAddress"]


def container_pid(name: str) -> int:
    return int(podman("inspect", "--format", "{{.State.Pid}}", name).stdout.strip())


def state(name: str) -> dict:
    """Status, exit code and pid of a container; {} when it does not exist."""
    r = podman("inspect", "--format", "{{json .State}}", name, check=False)
    return json.loads(r.stdout) if r.returncode == 0 else {}


def logs(name: str) -> str:
    r = podman("logs", name, check=False)
    return r.stdout + r.stderr


def in_netns(pid: int, *args: str, timeout: float = 240) -> dict:
    """Run probe.py ARGS in the network namespace of process PID."""
    r = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, str(PROBE), *args],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0 or not r.stdout.strip():
        raise RuntimeError(f"probe {args} failed: {r.stderr.strip()}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def wait_for(what: str, check, timeout: float, interval: float = 2.0, fail_fast=None):
    """Poll `check()` until it returns a truthy value; `fail_fast()` returning a
    string aborts early with that reason. Generous timeouts: TCG boots are slow."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = check()
            if last:
                return last
        except (RuntimeError, OSError, subprocess.SubprocessError) as e:
            last = e
        if fail_fast:
            reason = fail_fast()
            if reason:
                raise AssertionError(f"{what}: {reason}")
        time.sleep(interval)
    raise AssertionError(f"{what}: not after {timeout:.0f} s (last: {last})")


# ---- command line ----------------------------------------------------------------------


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "render":
        print("usage: podlab.py render VALUES.yaml OUTDIR", file=sys.stderr)
        return 2
    values = yaml.safe_load(pathlib.Path(argv[1]).read_text()) or {}
    out = pathlib.Path(argv[2])
    out.mkdir(parents=True, exist_ok=True)
    release = values.get("session", {}).get("id", "lab")
    played = Played(render(values, f"lab-{release}"))
    (out / "pod.yaml").write_text(played.pod_yaml())
    if played.secret:
        (out / "secret.json").write_text(played.secret_json())
        (out / "secret.json").chmod(0o600)
    if played.test_rendered:
        (out / "test-pod.yaml").write_text(played.test_pod_yaml("POD_IP"))
    print(f"pod {played.name}; secret {played.secret_name()}")
    for lack, what in ADAPTATIONS:
        print(f"- {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
