#!/usr/bin/env bash
# Fetch the pinned OpenSeadragon build from npm and copy it into the web viewer's
# vendor folder (src/omnipath_lvlm/serve/static/vendor/openseadragon/, gitignored).
#
# Usage: scripts/build_viewer.sh            (idempotent; skips when the pinned version is present)
#        OMNIPATH_NPM_CACHE=DIR scripts/build_viewer.sh   (where npm installs; default ~/.cache/omnipath-viewer)
set -euo pipefail

OSD_VERSION="6.1.1"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$repo_root/src/omnipath_lvlm/serve/static/vendor/openseadragon"
stamp="$dest/VERSION"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$OSD_VERSION" && -f "$dest/openseadragon.min.js" ]]; then
    echo "OpenSeadragon $OSD_VERSION already in $dest"
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "error: npm is needed to fetch OpenSeadragon $OSD_VERSION (install Node.js/npm, e.g. apt-get install npm)" >&2
    exit 1
fi

work="${OMNIPATH_NPM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/omnipath-viewer}/osd-$OSD_VERSION"
mkdir -p "$work"
if [[ ! -f "$work/node_modules/openseadragon/build/openseadragon/openseadragon.min.js" ]]; then
    # A private package.json so npm installs into $work, not into a parent project.
    [[ -f "$work/package.json" ]] || echo '{"name": "omnipath-viewer-vendor", "private": true}' > "$work/package.json"
    npm install --prefix "$work" --no-audit --no-fund --ignore-scripts --save-exact "openseadragon@$OSD_VERSION"
fi

src="$work/node_modules/openseadragon/build/openseadragon"
installed="$(node -p "require('$work/node_modules/openseadragon/package.json').version" 2>/dev/null || true)"
if [[ "$installed" != "$OSD_VERSION" ]]; then
    echo "error: npm installed openseadragon '$installed', expected $OSD_VERSION" >&2
    exit 1
fi

rm -rf "$dest"
mkdir -p "$dest"
cp -R "$src/." "$dest/"
cp "$work/node_modules/openseadragon/LICENSE.txt" "$dest/" 2>/dev/null || true
echo "$OSD_VERSION" > "$stamp"
echo "OpenSeadragon $OSD_VERSION copied to $dest"
