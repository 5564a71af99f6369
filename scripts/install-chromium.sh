#!/usr/bin/env bash
# Installs Debian's chromium for the UI test's screenshot (tests/test_ui.py), if missing.
set -euo pipefail
bash "$(dirname "$0")/install-debian-package.sh" /usr/bin/chromium chromium \
    "headless screenshots for tests/test_ui.py"
/usr/bin/chromium --version
