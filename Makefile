# msync — run `make` for the list of targets.
GO       ?= go
BIN      := bin/msync
CONFIG   ?= configs/msync.yaml
DATA     ?= ./data
GOBIN    := $(shell $(GO) env GOPATH)/bin
# staticcheck 2026.2.2, pinned: `make lint` installs it into bin/ once.
STATICCHECK_VERSION := v0.8.2
STATICCHECK := bin/staticcheck-$(STATICCHECK_VERSION)

.PHONY: help build run cluster test test-deps test-norace test-browser test-integration chaos engines-up engines-down fuzz soak bench lint generate clean

help:
	@echo "make run               build and start the all-in-one server (configs/msync.yaml, ./data)"
	@echo "make cluster           build and start a local cluster: logic+job and 2 comets (:3101, :3103)"
	@echo "make test              all tests, with -race, plus the netpoll paths without -race"
	@echo "make lint              go vet, staticcheck (pinned, installed into bin/) and the import rules (internal/lint)"
	@echo "make test-browser      browser SDK: node --test (sdk/js) and the demo page in headless Chromium"
	@echo "make build             build bin/msync"
	@echo "make bench             Go micro-benchmarks and a short run of every load scenario"
	@echo "make fuzz              run every fuzz target for FUZZTIME (default 20s) each, one after another"
	@echo "make soak              msync all killed -9 10 times under load, 500 devices, 100000 oplogs: lost/dup/out-of-order"
	@echo "make test-integration  conformance suites against real Cassandra/RocketMQ (starts them unless MSYNC_* env names running ones)"
	@echo "make engines-up        start Cassandra 5.0 + RocketMQ 5.3 on 127.0.0.1 from Maven Central jars (./.engines; needs JDK 17, Maven)"
	@echo "make engines-down      stop them"
	@echo "make chaos             8-minute chaos run of the cluster on the real engines (kill -9 of each tier, broker restart, Cassandra stop)"
	@echo "make generate          regenerate protobuf code (needs protoc; output is committed)"
	@echo "make clean             remove bin/ and ./data"

build:
	$(GO) build -o $(BIN) ./cmd/msync

run: build
	./$(BIN) all -c $(CONFIG) --data $(DATA)

# Mixed local cluster (README "Cluster mode"); COMETS=n for more comets.
COMETS ?= 2
cluster: build
	BIN=$(BIN) scripts/cluster.sh $(COMETS)

# netpoll swaps in a locked buffer under -race, which hides concurrent-writer
# crashes (see DEPENDENCIES.md), so the gateway and e2e tests also run without it.
# pkg/queue/rocketmq too: stopping a running push consumer trips a data race
# inside rocketmq-client-go v2.1.2, so that test is built only without -race.
test: test-deps
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 12m ./...
	$(MAKE) test-norace
	$(MAKE) test-kotlin

test-norace:
	$(GO) test -count=1 -timeout 8m ./gateway/... ./comet/... ./e2e/... ./pkg/queue/rocketmq

# Chromium and Node.js for ./web: installed from Debian packages when missing
# and running as root, otherwise one line saying what to install.
test-deps:
	scripts/test-deps.sh

# Also part of `make test` (./web): TestJSUnit runs `node --test` on sdk/js
# (needs Node.js >= 20), TestBrowserDemo drives /demo in headless Chromium
# (needs /usr/bin/chromium or MSYNC_CHROMIUM; MSYNC_SKIP_BROWSER=1 skips it).
test-browser: test-deps
	$(GO) test -count=1 -timeout 5m -v -run 'TestJSUnit|TestGoldenFrames|TestBrowserDemo' ./web

# Kotlin SDK (sdk/kotlin): `mvn verify` builds it and runs its JUnit tests
# against bin/msync (a real `msync all` on free ports). Needs JDK 17 and Maven.
.PHONY: test-kotlin
test-kotlin: build
	@command -v java >/dev/null && command -v mvn >/dev/null || { echo "test-kotlin: java and mvn are required (apt-get install openjdk-17-jdk-headless maven)"; exit 1; }
	MSYNC_BIN=$(abspath $(BIN)) mvn -q -B -f sdk/kotlin/pom.xml verify

# Starts the engines it needs unless MSYNC_CASSANDRA_HOSTS / MSYNC_ROCKETMQ_NAMESRV
# name running ones, and stops them afterwards (scripts/test-integration.sh).
test-integration:
	scripts/test-integration.sh

# Real engines for the production path (scripts/engines.sh has the ports,
# MSYNC_ENGINES_DIR and the other variables).
# The long chaos run on the real engines (e2e/chaos_real_test.go; a short one is in test-integration).
chaos:
	MSYNC_CHAOS_DURATION=8m MSYNC_CHAOS_CHANNELS=240 MSYNC_CHAOS_RATE=400 MSYNC_CHAOS_PUBLISHERS=24 MSYNC_CHAOS_MIN_OPLOGS=50000 INTEGRATION_PKGS=./e2e/ INTEGRATION_RUN=TestChaosReal INTEGRATION_TIMEOUT=40m scripts/test-integration.sh

engines-up:
	scripts/engines.sh up

engines-down:
	scripts/engines.sh down

# The import rules between tiers are a test: internal/lint/imports_test.go.
lint: $(STATICCHECK)
	$(GO) vet ./...
	$(STATICCHECK) ./...
	$(GO) test -count=1 ./internal/lint

$(STATICCHECK):
	GOBIN=$(CURDIR)/bin $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	mv bin/staticcheck $@

# Every parser an attacker reaches has a target (package:Target); each runs
# for FUZZTIME with one worker (the machine is shared). Seeds are committed
# (f.Add and testdata/fuzz/), so plain `go test` replays them too.
FUZZTIME ?= 20s
FUZZ_TARGETS := pkg/protocol:FuzzDecode pkg/protocol:FuzzBodies pkg/protocol:FuzzFrameRoundTrip pkg/protocol:FuzzErrorFrame pkg/protocol:FuzzInflate \
	pkg/auth:FuzzVerify pkg/auth:FuzzSignVerify pkg/config:FuzzParse pkg/biz:FuzzParseDuration pkg/biz:FuzzParseSpec \
	pkg/oplog:FuzzParseChannel pkg/oplog:FuzzValidID pkg/oplog:FuzzVersions pkg/oplog:FuzzEvaluate \
	pkg/store/pebble:FuzzPageDecoder pkg/store/pebble:FuzzParseExpiryKey \
	gateway:FuzzWSReader gateway:FuzzStreamReader gateway:FuzzNetpollStream gateway:FuzzUpgrade logic:FuzzPublishBody logic:FuzzBatchBody logic:FuzzConnect \
	pkg/client:FuzzTCPReadFrame pkg/client:FuzzWSReadFrame pkg/client:FuzzPages comet:FuzzSessionFrames
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "fuzz $$t for $(FUZZTIME)"; \
		$(GO) test -run='^$$' -fuzz="^$${t#*:}\$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=10s -parallel 1 ./$${t%%:*}; \
	done

# The full soak (bench/soak.go); a short one runs in `make test` (TestSoakShort).
soak: build
	./$(BIN) bench soak -v

# Short runs: figures for docs/benchmarks.md come from the full commands there.
bench: build
	$(GO) test -run='^$$' -bench=. -benchmem -benchtime=1x ./...
	./$(BIN) bench conns -n 2000 --window 3s
	./$(BIN) bench conns -n 2000 --window 3s --comets 1
	./$(BIN) bench heartbeat -n 2000 --interval 1s --window 3s
	./$(BIN) bench publish --rate 5000 --duration 3s --devices 500 --batch 100
	./$(BIN) bench publish --rate 1000 --duration 3s --devices 500 --batch 1
	./$(BIN) bench fanout -n 2000 --msgs 5
	./$(BIN) bench fanout -n 2000 --msgs 200 --batch 50
	./$(BIN) bench reconnect -n 1000 --backlog 20

generate:
	@command -v protoc >/dev/null || { echo "protoc missing: apt-get install protobuf-compiler"; exit 1; }
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.0
	PATH="$(GOBIN):$$PATH" protoc -I . --go_out=. --go_opt=module=github.com/msync/msync \
		pkg/oplog/oplog.proto pkg/protocol/pb/wire.proto
	PATH="$(GOBIN):$$PATH" protoc -I . --go_out=. --go_opt=module=github.com/msync/msync \
		--go-grpc_out=. --go-grpc_opt=module=github.com/msync/msync pkg/api/pb/api.proto

clean:
	rm -rf bin $(DATA)
