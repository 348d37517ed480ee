#!/usr/bin/env bash
# Install what the browser test needs (idempotent): Debian's Chromium (apt) and the Node driver
# playwright-core (npm, pinned, into the project-local node_modules/, git-ignored). No browser is
# downloaded by Playwright itself: the test drives /usr/bin/chromium.
# Called by scripts/test.sh before the slow suite; safe to run by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
PLAYWRIGHT_CORE_VERSION="1.65.1"

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "[bootstrap-browser] chromium is missing and this user cannot run apt-get; install the 'chromium' package" >&2
    exit 1
  fi
  echo "[bootstrap-browser] installing Debian's chromium (apt-get)" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

if ! command -v node >/dev/null 2>&1; then
  echo "[bootstrap-browser] node is missing; install Node.js 18+ (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
installed="$(node -p "require('./node_modules/playwright-core/package.json').version" 2>/dev/null || true)"
if [ "$installed" != "$PLAYWRIGHT_CORE_VERSION" ]; then
  echo "[bootstrap-browser] installing playwright-core@$PLAYWRIGHT_CORE_VERSION into node_modules/" >&2
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-save --no-package-lock --no-audit --no-fund \
    --loglevel=error --prefix . "playwright-core@$PLAYWRIGHT_CORE_VERSION" >/dev/null
fi
echo "[bootstrap-browser] ready: $(chromium --version 2>/dev/null | head -1), playwright-core $PLAYWRIGHT_CORE_VERSION" >&2
