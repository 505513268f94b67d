# Two commands do everything on a fresh Debian machine (as root):
#   make demo   build the custom maddy and run it on the example configuration
#   make test   run the whole test suite (installs unbound first if missing)

GO ?= go
PKGS := ./...

.PHONY: deps build demo test vet fuzz bench bench-cold

deps:
	./scripts/deps.sh

build:
	$(GO) build -o bin/maddy ./examples/maddy

# The custom maddy on examples/demo/maddy.conf, delivering to a stand-in
# Internet (signed zones, a validating unbound, four receivers) in a private
# network namespace; prints each verdict and maddy's log lines.
demo: deps build
	$(GO) test -count=1 -v -run '^TestDemo$$' ./examples/demo

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet $(PKGS)

test: deps vet
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

# Short coverage-guided runs of every fuzz target (FUZZTIME each).
FUZZTIME ?= 20s
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

# The cold path end to end (internal/coldbench): a fresh maddy and a flushed
# unbound per message, COLD_DELAY between unbound and the authoritative
# server; median delivery time without a policy, with daneguard and with
# maddy's built-in dane, and the resolver round trips before the first SMTP
# connection. Needs root (network namespace). Not part of make test.
COLD_N ?= 9
COLD_DELAY ?= 50ms
bench-cold: deps
	mkdir -p bin
	DANEGUARD_COLD=1 DANEGUARD_COLD_N=$(COLD_N) DANEGUARD_COLD_DELAY=$(COLD_DELAY) DANEGUARD_COLD_OUT=$(CURDIR)/bin/cold.txt \
		$(GO) test -count=1 -v -timeout 60m -run '^TestColdDelivery$$' ./internal/coldbench
