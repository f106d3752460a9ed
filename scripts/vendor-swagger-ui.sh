#!/usr/bin/env bash
# Re-vendor swagger-ui-dist (the renderer of /docs) into web/: the pinned version from the npm
# registry, checked against its published sha512, and only the files /docs needs. Run by hand to
# upgrade (change VERSION and INTEGRITY together); nothing fetches it at run time or in `make setup`.
set -euo pipefail

VERSION=5.35.0
INTEGRITY=sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ==
WEB=$(cd "$(dirname "$0")/.." && pwd)/web

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "swagger-ui-dist@$VERSION" >/dev/null)
tarball="$work/swagger-ui-dist-$VERSION.tgz"
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [[ "$actual" != "$INTEGRITY" ]]; then
  echo "vendor-swagger-ui.sh: swagger-ui-dist $VERSION is $actual, expected $INTEGRITY" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$work"
cp "$work/package/swagger-ui-bundle.js" "$work/package/swagger-ui.css" \
   "$work/package/swagger-ui-bundle.js.LICENSE.txt" "$WEB/"
cp "$work/package/LICENSE" "$WEB/swagger-ui-LICENSE"
cp "$work/package/NOTICE" "$WEB/swagger-ui-NOTICE"
echo "vendor-swagger-ui.sh: swagger-ui-dist $VERSION in $WEB"
