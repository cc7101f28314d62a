# turnbox. `make demo` runs the main job; `make test` runs the whole suite
# (installing system dependencies first, as root). See README.md.
GO       ?= go
BIN      ?= bin
# seccomp: runc sandboxes get a seccomp filter (cgo, libseccomp-dev).
TAGS     ?= seccomp
TESTFLAGS ?= -race -count=1 -timeout 40m -tags $(TAGS)

.PHONY: all build demo deps test check lint unit fuzz smoke test-e2b test-clients bench clean generate

all: build

build:
	$(GO) build -tags $(TAGS) -o $(BIN)/turnbox ./cmd/turnbox
	CGO_ENABLED=1 $(GO) build -tags netgo,osusergo -ldflags '-extldflags=-static' -o $(BIN)/turnbox-agent ./cmd/turnbox-agent

# The main job: install what is needed, build, and play a scripted session
# on the default backend (gVisor when it can run here, else none).
demo: deps build
	$(BIN)/turnbox demo

deps:
	bash scripts/install-deps.sh

# The whole suite: system dependencies, then lint and every test with -race,
# the fuzz targets for a bounded time, a smoke test of `turnbox serve`
# spoken to by buf curl (a client not written in Go), the unmodified e2b SDK
# against `turnbox serve --e2b` (test-e2b), the TypeScript client and the
# Python example against `turnbox serve` (test-clients), and the zfs suites
# on real kernel OpenZFS in a qemu VM (test-zfs).
test: deps check test-zfs

check: lint unit fuzz smoke test-e2b test-clients

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet -tags $(TAGS) ./...
	staticcheck -tags $(TAGS) ./...
	@# Generated ConnectRPC code must match the .proto (installs pinned buf).
	bash remote/scripts/gen.sh --check
	@# The libzfs_core driver (cgo, build tag) must compile and link against
	@# OpenZFS 2.3's headers; it runs only where /dev/zfs exists.
	eval "$$(bash zfs/scripts/fetch-libzfs-dev.sh 2>/dev/null)" && \
	  $(GO) vet -tags libzfs_core ./zfs/... && \
	  $(GO) test -c -o /dev/null -tags libzfs_core ./zfs

# zfs-fuse is one daemon per machine: the run owns it, not a test binary.
unit:
	@bash scripts/zfs-fuse.sh start
	@status=0; $(GO) test $(TESTFLAGS) ./... || status=$$?; bash scripts/zfs-fuse.sh stop; exit $$status

# A count, not a duration: with a wall-clock -fuzztime, Go 1.26's fuzz
# coordinator can report its own end-of-time deadline as a failure
# ("context deadline exceeded", no crasher; golang/go#75804, fixed in Go
# 1.27). It failed a CI dry run on a loaded machine. ~60,000 runs take
# 8-15 s here.
FUZZTIME ?= 60000x
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzExecuteToolRequest$$' -fuzztime $(FUZZTIME) ./remote/server/
	$(GO) test -run '^$$' -fuzz '^FuzzExecuteToolJSON$$' -fuzztime $(FUZZTIME) ./remote/server/

smoke: build
	bash remote/scripts/serve-smoke.sh $(BIN)/turnbox

# The unmodified e2b SDK (npm, two pinned versions) against `turnbox serve
# --e2b` on gVisor: see clients/e2b-conformance and docs/e2b.md.
test-e2b: build
	bash scripts/test-e2b.sh $(BIN)/turnbox

# The TypeScript client (clients/typescript: generated code current, tsc,
# node:test) and the standard-library Python example against a real
# `turnbox serve` on loopback (runtime none; ~40 s).
test-clients: build
	bash scripts/test-clients.sh $(BIN)/turnbox

# The benchmark report: every storage backend × runtime that runs here
# (the others are listed as skipped), each beside its baselines, then the
# workspace-size (1k, 10k, 100k files) and concurrent-sessions (1, 10, 50)
# series on btrfs, and remote beside embedded calls; writes bench-out/report.json, report.md and chart.svg.
# Medians of 30 runs (exec 50); without --remote it took 15 min 41 s on a
# shared 2-core machine at load 4-10 (--remote adds its own run). See
# docs/benchmarks.md.
BENCHOUT   ?= bench-out
BENCHFLAGS ?= --matrix --series --remote --pool 1 --files 1000 --n 30 --exec-n 50
bench: deps build
	$(BIN)/turnbox bench $(BENCHFLAGS) --out $(BENCHOUT) --log-level info

clean:
	rm -rf $(BIN)

# Regenerate remote/gen from remote/proto with pinned buf and plugins
# (installed into /var/cache/turnbox/bin if missing); CI checks that the
# committed code is current with `bash remote/scripts/gen.sh --check`.
generate:
	bash remote/scripts/gen.sh

# The zfs package's suites (libzfs_core and command drivers) against real
# kernel OpenZFS, in a qemu VM (TCG). Root, Debian 12; fetches and caches
# the kernel and the built modules under /var/cache/turnbox/zfs-vm.
.PHONY: test-zfs
test-zfs:
	bash scripts/zfs-vm/run.sh
