// Package e2e holds berth's end-to-end tests: they build the berth binary and
// run it against the real things on 127.0.0.1 — distribution's
// docker-registry as the upstream, skopeo, crane and containerd's ctr as
// clients, and the OCI distribution-spec conformance tool.
//
// The tests skip when a component is missing, or under -short; with
// BERTH_E2E=1 (as `make test` sets) a missing component is a failure that
// says to run `make deps`. Every process is started on a port the test picks
// and stopped by its PID; berth's HTTP(S)_PROXY points at a local trap, so any
// attempt to reach a non-loopback host is counted (and fails the test) instead
// of leaving the machine.
//
// TestMain builds ./cmd/berth once. BERTH_E2E_RACE=1 builds it with the race
// detector (a race makes berth exit 66, which fails the test that stops it);
// BERTH_E2E_BIN=/path/to/berth tests a binary built elsewhere.
//
// TestContainerdPull runs containerd itself (CRI plugin disabled, everything
// in a temporary directory) with the hosts.toml files `berth
// configure-containerd` writes, and pulls with `ctr images pull`, unpacking
// with overlayfs when containerd loaded it, else native
// (BERTH_E2E_SNAPSHOTTER=native|overlayfs chooses).
//
// A check never skips because it recognises a known berth bug: a failure is a
// failure, so a regression cannot hide behind a skip.
package e2e
