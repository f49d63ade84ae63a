"""The deployment guide's own snippets, taken from DEPLOYMENT.md as written.

The guide is the contract: these helpers pull its commands, heredocs and
YAML blocks out of the Markdown and expand the shell parts the way bash
would (`$SESSION_ID`, `$student`, `$(openssl rand -base64 N)`), so the tests
feed the chart exactly what an operator following the guide would.
"""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from conftest import GUIDE, openssl_rand_base64


def text() -> str:
    if not GUIDE.exists():
        pytest.fail(f"deployment guide not found at {GUIDE} (docs/seed/DEPLOYMENT.md is part of the repository)")
    return GUIDE.read_text()


def code_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text(), flags=re.S)


def block_containing(lang: str, needle: str) -> str:
    found = [b for b in code_blocks(lang) if needle in b]
    assert found, f"the guide has no {lang} block containing {needle!r}"
    return found[0]


def expand(s: str, env: dict[str, str]) -> str:
    """bash expansion of the few forms the guide uses."""
    s = re.sub(r"\$\(openssl rand -base64 (\d+)\)", lambda m: openssl_rand_base64(int(m.group(1))), s)
    s = re.sub(r"\$\(date \+%s\)", "1764097268", s)
    for k, v in env.items():
        s = s.replace("${" + k + "}", v).replace("$" + k, v)
    return s


def heredoc(after: str, env: dict[str, str]) -> str:
    """Body of the heredoc started by the command `after` (`cat > FILE <<EOF`)."""
    t = text()
    start = t.index(after)
    body_start = t.index("\n", start) + 1
    end = t.index("\nEOF", body_start)
    return expand(t[body_start:end] + "\n", env)


def quick_start() -> tuple[str, list[str]]:
    """Method 1: the release name and the --set expressions, expanded."""
    block = block_containing("bash", "helm install lab-$SESSION_ID")
    env = {}
    for m in re.finditer(r'^(\w+)="?(.*?)"?$', block, flags=re.M):
        env[m.group(1)] = expand(m.group(2), env)
    env["PASSWORD"] = openssl_rand_base64(32)
    cmd = block[block.index("helm install"):]
    cmd = cmd[: cmd.index("\n\n")] if "\n\n" in cmd else cmd
    words = shlex.split(expand(cmd.replace("\\\n", " "), env))
    assert words[:2] == ["helm", "install"] and words[3] == "charts/dozlab-session", words
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    return words[2], sets


def yaml_block(needle: str) -> dict:
    return yaml.safe_load(block_containing("yaml", needle))


def lab_types() -> dict[str, dict]:
    """Scenario 3: the Kubernetes and Docker lab `values:` snippets."""
    block = block_containing("yaml", "# Docker lab")
    k8s, docker = re.split(r"^# Docker lab.*$", block, flags=re.M)
    return {
        "kubernetes": yaml.safe_load(k8s)["values"],
        "docker": yaml.safe_load(docker)["values"],
    }
