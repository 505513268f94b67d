# Two commands do everything on a fresh Debian machine (as root):
#   make demo   build the custom maddy and run it on the example configuration
#   make test   run the whole test suite (installs unbound first if missing)

GO ?= go
PKGS := ./...

.PHONY: deps build demo test vet fuzz bench

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
