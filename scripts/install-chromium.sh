#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver for the browser tests (tests/test_ui_browser.py).
# Skipped when both are already on PATH. Needs root (or sudo) for apt-get; without it the
# browser tests skip outside CI and fail in CI (CI=true), saying why.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo -n"; else
    echo "install-chromium.sh: not root and no sudo: apt-get install chromium chromium-driver by hand" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
command -v chromium && command -v chromedriver
