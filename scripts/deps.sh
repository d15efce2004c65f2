#!/usr/bin/env bash
# Installs what berth's tests need on a fresh Debian machine (run as root):
# the real upstream registry, the real clients (skopeo, crane, oras, podman),
# containerd (Debian's 1.6 and two 2.x builds from the Go module), golangci-lint,
# helm, Prometheus (promtool and a real scrape of metrics_listen in deploy/)
# and the OCI conformance tool. (bench/compare.sh installs nginx and
# gnuplot itself: only the benchmark needs them.) Idempotent: skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$PWD/bin"
mkdir -p "$BIN"
export GOBIN="$BIN"

need_apt=()
for pair in docker-registry:docker-registry skopeo:skopeo containerd:containerd ctr:containerd prometheus:prometheus promtool:prometheus htpasswd:apache2-utils podman:podman; do
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

# oras: a third client that must reach an upstream through a prefix name.
[ -x "$BIN/oras" ] || go install oras.land/oras/cmd/oras@v1.3.6

# containerd 2.x is not in Debian: build it from the Go module, once per
# version, into bin/containerd-<version>/ (go install names the binaries
# containerd and ctr, hence one GOBIN per version). bin/containerd-2.2 is the
# pinned 2.2 release; bin/containerd-2-latest is the newest 2.x the module
# proxy serves when deps last ran (kept as it is when the proxy cannot be asked).
# About 3 minutes per version on 2 cores with a warm module cache.
CONTAINERD22=v2.2.10
build_containerd() {
  local v=$1 dir="$BIN/containerd-$1"
  [ -x "$dir/containerd" ] && [ -x "$dir/ctr" ] && return 0
  echo "deps: building containerd $v into $dir"
  GOBIN="$dir" GOFLAGS=-mod=mod go install -tags "no_btrfs no_devmapper no_zfs" \
    "github.com/containerd/containerd/v2/cmd/containerd@$v" "github.com/containerd/containerd/v2/cmd/ctr@$v"
}
build_containerd "$CONTAINERD22"
ln -sfn "containerd-$CONTAINERD22" "$BIN/containerd-2.2"
latest=$(go list -m -versions github.com/containerd/containerd/v2 2>/dev/null | tr ' ' '\n' | grep -E '^v2\.[0-9]+\.[0-9]+$' | sort -V | tail -1 || true)
if [ -n "$latest" ]; then
  build_containerd "$latest"
  ln -sfn "containerd-$latest" "$BIN/containerd-2-latest"
elif [ ! -e "$BIN/containerd-2-latest" ]; then
  echo "deps: cannot list containerd versions from the module proxy" >&2; exit 1
fi

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
