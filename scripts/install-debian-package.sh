#!/usr/bin/env bash
# Installs a Debian package a test needs, if its program is missing:
#   install-debian-package.sh PROGRAM PACKAGE WHY
# Idempotent: does nothing when PROGRAM (a path, or a command on PATH) exists. Needs root
# (as CI runs) and apt.
set -euo pipefail

PROGRAM=$1
PACKAGE=$2
WHY=$3
NAME="install-$PACKAGE"

present() { [ -x "$PROGRAM" ] || command -v "$PROGRAM" >/dev/null 2>&1; }

if present; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "$NAME: $PROGRAM is missing and installing it needs root" >&2
    echo "  (run as root, or: sudo apt-get install $PACKAGE)" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "$NAME: $PROGRAM is missing and apt-get is not available" >&2
    exit 1
fi

echo "$NAME: installing Debian's $PACKAGE ($WHY)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "$PACKAGE" >/dev/null

if ! present; then
    echo "$NAME: apt-get finished but $PROGRAM is still missing" >&2
    exit 1
fi
