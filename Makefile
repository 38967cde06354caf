# msync — run `make` for the list of targets.
GO       ?= go
BIN      := bin/msync
CONFIG   ?= configs/msync.yaml
DATA     ?= ./data
GOBIN    := $(shell $(GO) env GOPATH)/bin

.PHONY: help build run test test-norace test-integration fuzz bench lint generate clean

help:
	@echo "make run               build and start the all-in-one server (configs/msync.yaml, ./data)"
	@echo "make test              all tests, with -race, plus the netpoll paths without -race"
	@echo "make build             build bin/msync"
	@echo "make bench             Go micro-benchmarks and a short run of every load scenario"
	@echo "make fuzz              fuzz the frame codec for 60s"
	@echo "make test-integration  conformance suites against real Cassandra/RocketMQ (needs MSYNC_* env)"
	@echo "make generate          regenerate protobuf code (needs protoc; output is committed)"
	@echo "make clean             remove bin/ and ./data"

build:
	$(GO) build -o $(BIN) ./cmd/msync

run: build
	./$(BIN) all -c $(CONFIG) --data $(DATA)

# netpoll swaps in a locked buffer under -race, which hides concurrent-writer
# crashes (see DEPENDENCIES.md), so the gateway and e2e tests also run without it.
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 12m ./...
	$(MAKE) test-norace

test-norace:
	$(GO) test -count=1 -timeout 8m ./gateway/... ./comet/... ./e2e/...

test-integration:
	$(GO) test -count=1 -tags integration -timeout 20m ./pkg/store/... ./pkg/queue/...

fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzDecode -fuzztime=60s ./pkg/protocol

bench:
	$(GO) test -run='^$$' -bench=. -benchmem -benchtime=1x ./...

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
