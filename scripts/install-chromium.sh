#!/usr/bin/env bash
# Installs Debian's chromium for the UI test's screenshot (tests/test_ui.py), if missing.
# Idempotent: does nothing when /usr/bin/chromium exists. Needs root (as CI runs) and apt.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-chromium: $CHROMIUM is missing and installing it needs root" >&2
    echo "  (run as root, or: sudo apt-get install chromium)" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-chromium: $CHROMIUM is missing and apt-get is not available" >&2
    exit 1
fi

echo "install-chromium: installing Debian's chromium (headless screenshots for tests/test_ui.py)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null

if [ ! -x "$CHROMIUM" ]; then
    echo "install-chromium: apt-get finished but $CHROMIUM is still missing" >&2
    exit 1
fi
"$CHROMIUM" --version
