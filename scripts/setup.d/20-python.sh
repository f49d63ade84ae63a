#!/usr/bin/env bash
# Python virtual environment for the chart tests (tests/chart): the real Helm
# engine (helm-python-sdk), kubernetes-validate, pytest and PyYAML, pinned in
# tests/chart/requirements.txt. Idempotent: skipped when .venv already holds
# exactly those pins (a stamp records the requirements file's hash).
set -euo pipefail
cd "$(dirname "$0")/../.."

req=tests/chart/requirements.txt
venv=.venv
stamp="$venv/.dozlab-requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

py="${PYTHON:-python3}"
if ! command -v "$py" >/dev/null; then
  echo "setup: $py not found; install Python 3.10+ (python3, python3-venv)" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating Python virtual environment $venv" >&2
  if ! "$py" -m venv "$venv"; then
    rm -rf "$venv"
    echo "setup: '$py -m venv' failed; install python3-venv (apt-get install python3-venv)" >&2
    exit 1
  fi
fi
echo "setup: installing chart test packages into $venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
echo "$want" > "$stamp"
