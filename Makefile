# berth: `make test` installs the test dependencies and runs every test.
SHELL := /bin/bash
export PATH := $(CURDIR)/bin:$(PATH)
GOTEST_FLAGS ?= -race -timeout 20m

.PHONY: run build deps lint test unit bench
run:
	go run ./cmd/berth serve

build:
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$$(git describe --always --dirty 2>/dev/null || echo dev)" -o bin/berth ./cmd/berth

deps:
	./scripts/deps.sh

lint: deps
	go vet ./...
	golangci-lint run ./...

# BERTH_E2E=1 turns a missing real component into a failure instead of a skip.
# The zero-allocation tests (named *Allocs*) skip under -race, where sync.Pool
# drops items at random: the first step runs them without it, so CI checks
# that property too (in the packages that have them).
test: deps lint
	go test -count=1 -timeout 10m -run 'Allocs' ./internal/bufchain ./internal/registry
	BERTH_E2E=1 go test $(GOTEST_FLAGS) ./...

unit:
	go test -short ./...

bench:
	go test -run XXX -bench . -benchmem ./internal/...
