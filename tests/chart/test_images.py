"""Lint-level checks of images/*/Containerfile (tests/pod builds and runs
them with Podman): stages are multi-stage and referenced correctly, every
COPY source exists in the build context (the repository root for the dozlab
images, images/code-server for code-server) and survives the .dockerignore,
the entrypoint is the one `dozlab` binary the chart's `command: ["dozlab"]`
expects (code-server: code-server, as the chart passes only args)."""

from __future__ import annotations

import fnmatch
import re

import pytest

from conftest import IMAGES, ROOT

CONTAINERFILES = sorted(IMAGES.glob("*/Containerfile"))
# Images holding the dozlab binary (context: the repository root).
DOZLAB_FILES = [p for p in CONTAINERFILES if p.parent.name != "code-server"]
# Made by `cargo build --release --bin dozlab` (target `prebuilt`), not committed.
BUILD_OUTPUTS = {"target/release/dozlab"}


def instructions(path):
    """(KEYWORD, rest) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            kw, _, rest = line.partition(" ")
            out.append((kw.upper(), rest.strip()))
    return out


def ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    result = False
    for p in patterns:
        neg = p.startswith("!")
        pat = p[1:] if neg else p
        pat = pat.rstrip("/")
        if fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(rel, pat + "/*") or rel == pat:
            result = not neg
    return result


def test_there_is_an_image_per_component():
    assert {p.parent.name for p in CONTAINERFILES} == {"dozlab", "dozlab-vm", "code-server"}
    assert (IMAGES / "README.md").exists()


@pytest.mark.parametrize("path", CONTAINERFILES, ids=lambda p: p.parent.name)
def test_containerfile_stages_and_copy_sources(path):
    context = path.parent if path.parent.name == "code-server" else ROOT
    ins = instructions(path)
    stages = []
    for kw, rest in ins:
        if kw == "FROM":
            m = re.match(r"(\S+)\s+AS\s+(\S+)", rest, flags=re.I)
            assert m, f"every stage is named: FROM {rest}"
            stages.append(m.group(2))
    assert len(stages) >= 2, "multi-stage build"
    ignore_file = path.with_name("Containerfile.dockerignore")
    patterns = [l.strip() for l in ignore_file.read_text().splitlines()
                if l.strip() and not l.startswith("#")]
    seen = []
    for kw, rest in ins:
        if kw == "FROM":
            seen.append(re.match(r"\S+\s+AS\s+(\S+)", rest, flags=re.I).group(1))
        if kw != "COPY":
            continue
        args = rest.split()
        flags = [a for a in args if a.startswith("--")]
        paths = [a for a in args if not a.startswith("--")]
        src = paths[:-1]
        frm = [f.split("=", 1)[1] for f in flags if f.startswith("--from=")]
        if frm:
            assert frm[0] in seen[:-1], f"COPY --from={frm[0]} names an earlier stage"
            continue
        for s in src:
            rel = s.rstrip("/").removeprefix("./")
            assert (context / rel).exists() or rel in BUILD_OUTPUTS, f"COPY source {s} is not in the repository"
            assert not ignored(rel, patterns), f"COPY source {s} is excluded by {ignore_file.name}"
    final = [rest for kw, rest in ins][len(ins) - 1 - [kw for kw, _ in ins][::-1].index("ENTRYPOINT")]
    assert final == ('["/usr/bin/tini", "--", "code-server"]' if context != ROOT else '["dozlab"]')
    last_from = max(i for i, (kw, _) in enumerate(ins) if kw == "FROM")
    assert any(kw == "USER" for kw, _ in ins[last_from:]), "the runtime stage sets USER explicitly"


def test_builds_the_binary_the_chart_runs():
    cargo = (ROOT / "crates" / "dozlab" / "Cargo.toml").read_text()
    assert 'name = "dozlab"' in cargo
    for path in DOZLAB_FILES:
        assert "cargo build --release --locked --bin dozlab" in path.read_text()


def test_dozlab_image_runs_non_root_by_default():
    ins = instructions(IMAGES / "dozlab" / "Containerfile")
    users = [rest for kw, rest in ins if kw == "USER"]
    assert users[-1].split(":")[0] != "0"
