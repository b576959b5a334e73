#!/usr/bin/env bash
# Build and tag Raylight's two images from this repository, at the chart's appVersion:
#   <registry>/raylight-operator:<version>   images/operator/Dockerfile  (the chart's image.repository)
#   <registry>/raylight-runtime:<version>    images/runtime/Dockerfile   (Settings.runtime_image; the chart's
#                                                                          operator.runtimeImage overrides it)
# REGISTRY (default ghcr.io/raylight-io) and VERSION (default: charts/raylight/Chart.yaml appVersion) change the
# names; PUSH=1 pushes them; BUILDER=podman uses podman. --dry-run prints the commands and the helm values.
set -euo pipefail
cd "$(dirname "$0")/.."
REGISTRY="${REGISTRY:-ghcr.io/raylight-io}"
VERSION="${VERSION:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/raylight/Chart.yaml)}"
BUILDER="${BUILDER:-docker}"
run() { if [ "${DRY_RUN:-0}" = 1 ]; then echo "$*"; else "$@"; fi; }
[ "${1:-}" = "--dry-run" ] && DRY_RUN=1
for image in operator runtime; do
  run "$BUILDER" build -f "images/$image/Dockerfile" -t "$REGISTRY/raylight-$image:$VERSION" .
  if [ "${PUSH:-0}" = 1 ]; then run "$BUILDER" push "$REGISTRY/raylight-$image:$VERSION"; fi
done
echo "# helm values for these images:"
echo "--set image.repository=$REGISTRY/raylight-operator --set image.tag=$VERSION" \
     "--set operator.runtimeImage=$REGISTRY/raylight-runtime:$VERSION"
