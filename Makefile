# The one interface for people and CI. `make run` and `make test` are the two
# commands a newcomer needs; see README.md.

GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X main.version=$(VERSION)
# A count, not a duration: go1.26's fuzz coordinator can fail a target with a
# bare "context deadline exceeded" when a -fuzztime duration ends while a
# worker is busy (go.dev/issue/75804, fixed in go1.27); a count has no deadline.
FUZZTIME    ?= 20000x
BENCHTIME   ?= 1s
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: check-rules build run test test-race test-alloc fuzz bench bench-ramp gobench wrk-compare fmt fmt-check vet lint check-size check-deps clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/flashsale .

## run: build and start the standalone server on :8080 (admin on 127.0.0.1:6060).
run: build
	./bin/flashsale

## test: everything CI runs: no large files tracked, no command linking the
## test framework, format, vet, race-enabled tests (unit, HTTP, in-process
## cluster, end-to-end), the allocation tests (which need the race detector
## off) and a short run of every fuzz target.
test: check-size check-deps fmt-check vet check-rules test-race test-alloc fuzz

## check-rules: the Prometheus configuration and alert rules, checked and
## unit-tested with promtool (Debian's prometheus package; CI installs it).
check-rules:
	@if command -v promtool >/dev/null 2>&1; then \
		cd deploy/prometheus && promtool check config prometheus.yml && promtool test rules flashsale-rules.test.yml; \
	else \
		echo "promtool is not installed: the alert rules are NOT tested (apt-get install prometheus)"; \
		if [ -n "$$CI" ]; then exit 1; fi; \
	fi

test-race:
	$(GO) test -race -count=1 ./...

test-alloc:
	$(GO) test -count=1 -run 'DoesNotAllocate|Allocations' ./...

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzIdentifiers$$' -fuzztime $(FUZZTIME) ./engine
	$(GO) test -run '^$$' -fuzz '^FuzzDecodePurchase$$' -fuzztime $(FUZZTIME) ./server
	$(GO) test -run '^$$' -fuzz '^FuzzPurchaseHandler$$' -fuzztime $(FUZZTIME) ./server
	$(GO) test -run '^$$' -fuzz '^FuzzIdempotencyKey$$' -fuzztime $(FUZZTIME) ./server
	$(GO) test -run '^$$' -fuzz '^FuzzOrderJSON$$' -fuzztime $(FUZZTIME) ./server
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./persist/orderlog
	$(GO) test -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $(FUZZTIME) ./codes
	$(GO) test -run '^$$' -fuzz '^FuzzRequestStart$$' -fuzztime $(FUZZTIME) ./server/admission
	$(GO) test -run '^$$' -fuzz '^FuzzRecover$$' -fuzztime $(FUZZTIME) ./persist/seglog
	$(GO) test -run '^$$' -fuzz '^FuzzRecords$$' -fuzztime $(FUZZTIME) ./persist/localstore

## bench: the flash-sale scenario against a throwaway server, with the
## ceiling (a bare fasthttp handler) measured in the same run; writes a
## table, bench-results/*.json and PNG charts. BENCHFLAGS adds flags.
BENCHFLAGS ?=
bench: build
	$(GO) run ./bench -spawn bin/flashsale -scenario flash -ceiling $(BENCHFLAGS)

## bench-ramp: step the rate of the mixed scenario up until P99 > 5 ms.
bench-ramp: build
	$(GO) run ./bench -spawn bin/flashsale -scenario ramp -ceiling $(BENCHFLAGS)

## gobench: the Go benchmarks of tuning.md (engine, order ids, store).
gobench:
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) ./engine ./persist/...

## wrk-compare: wrk against a bare fasthttp handler and the purchase endpoint
## (sold-out and winning paths), in one run, with the ratios (needs wrk).
wrk-compare: build
	$(GO) build -o bin/bare ./tools/bare
	bench/wrk/compare.sh

fmt:
	gofmt -w .

fmt-check:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

## check-size: no tracked file over 1 MiB (binaries, data and generated files
## do not belong in the repository; .gitignore lists what builds write).
MAX_FILE_BYTES ?= 1048576
check-size:
	@big=$$(git ls-files -z | xargs -0 -r stat -c '%s %n' 2>/dev/null | awk -v max=$(MAX_FILE_BYTES) '$$1 > max'); \
	if [ -n "$$big" ]; then echo "tracked files over $(MAX_FILE_BYTES) bytes (remove them and ignore them):"; echo "$$big"; exit 1; fi

## check-deps: no command links package testing (test helpers stay in tests),
## and the server links neither gRPC nor html/template: a package that calls
## reflect's MethodByName (html/template does) keeps every exported method in
## the binary, which doubled it when an OTLP exporter brought gRPC in.
check-deps:
	@for p in $$($(GO) list -f '{{if eq .Name "main"}}{{.ImportPath}}{{end}}' ./...); do \
		if $(GO) list -deps $$p | grep -qx testing; then echo "$$p links package testing"; exit 1; fi; done
	@if $(GO) list -deps . | grep -E '^(html/template|google.golang.org/grpc)$$'; then \
		echo "the server links the packages above"; exit 1; fi

lint: fmt-check vet
	$(GO) run $(STATICCHECK) ./...

clean:
	rm -rf bin data bench-results
