#!/usr/bin/env bash
# The browser of tests/integration/test_page_token.py: Debian's Chromium and its chromedriver, installed with
# apt when missing (Selenium then downloads nothing). Called by `make setup`; safe to run again.
set -euo pipefail

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver}

if [[ -x "$CHROMIUM" && -x "$CHROMEDRIVER" ]]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "browser.sh: no apt-get here; install Chromium and chromedriver yourself and set" \
       "CHROMIUM and CHROMEDRIVER (tests/integration/test_page_token.py needs them)" >&2
  exit 1
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  SUDO="sudo"
fi
echo "browser.sh: installing chromium and chromium-driver (for tests/integration/test_page_token.py)"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
  || { $SUDO apt-get update -qq && \
       $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }
"$CHROMIUM" --version
"$CHROMEDRIVER" --version
