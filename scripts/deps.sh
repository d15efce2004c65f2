#!/usr/bin/env bash
# Installs what berth's tests need on a fresh Debian machine (run as root):
# the real upstream registry, the real clients, containerd, crane, golangci-lint,
# helm, Prometheus (promtool and a real scrape of metrics_listen in deploy/)
# and the OCI conformance tool. (bench/compare.sh installs nginx and
# gnuplot itself: only the benchmark needs them.) Idempotent: skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/bin"
mkdir -p "$BIN"
export GOBIN="$BIN"

need_apt=()
for pair in docker-registry:docker-registry skopeo:skopeo containerd:containerd ctr:containerd prometheus:prometheus promtool:prometheus htpasswd:apache2-utils; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi

[ -x "$BIN/crane" ] || go install github.com/google/go-containerregistry/cmd/crane@v0.22.1
# crictl drives containerd's CRI image service as the kubelet does (private images e2e).
[ -x "$BIN/crictl" ] || go install sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0
[ -x "$BIN/golangci-lint" ] || go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0
# helm lint / helm template of deploy/helm/berth (deploy/deploy_test.go).
[ -x "$BIN/helm" ] || go install helm.sh/helm/v3/cmd/helm@v3.22.0

# The OCI distribution-spec conformance suite, pinned (see TESTING.md).
CONF_VERSION=v0.0.0-20260831232431-97274622c111
if [ ! -x "$BIN/oci-conformance" ]; then
  proxy=${GOPROXY:-$(go env GOPROXY)}; proxy=${proxy%%,*}
  dir=$(GOPROXY=$proxy GOFLAGS=-mod=mod go mod download -json "github.com/opencontainers/distribution-spec/conformance@$CONF_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  tmp=$(mktemp -d)
  cp -r "$dir/." "$tmp/"
  chmod -R u+w "$tmp"
  (cd "$tmp" && GOPROXY=$proxy GOFLAGS=-mod=mod go build -o "$BIN/oci-conformance" .)
  rm -rf "$tmp"
fi
echo "deps: ok ($BIN)"
