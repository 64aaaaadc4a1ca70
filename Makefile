# cloudwarden: the two set-up commands are `make demo` and `make test`.
CARGO ?= cargo
TOOLS := $(CURDIR)/.tools
TANSU := $(TOOLS)/bin/tansu
TANSU_VERSION := 0.6.0
TANSU_PORT ?= 19092
TANSU_PID := $(TOOLS)/tansu.pid

.PHONY: all build demo demo-broker test bench lint fmt clean tansu broker-start broker-stop

all: build

build:
	$(CARGO) build --release

## The main job on an embedded default: an in-process Kafka broker (librdkafka's mock cluster),
## a realistic stream with attacks, the service, and the alerts as the SIEM reads them.
demo:
	$(CARGO) run --release --quiet -- demo

## Every test: unit, property, golden, public datasets, schemas, CLI, Kafka (mock cluster and a
## real Tansu broker, installed into .tools/ on first use).
test: $(TANSU)
	TANSU_BIN=$(TANSU) $(CARGO) test --quiet
	$(CARGO) run --quiet -- check-config deploy/cloudwarden.toml

## Benchmarks (criterion and the service benchmark against a local Tansu).
bench: $(TANSU)
	$(CARGO) bench --bench decode
	$(CARGO) bench --bench engine
	TANSU_BIN=$(TANSU) $(CARGO) bench --bench service
	TANSU_BIN=$(TANSU) $(CARGO) bench --bench scale_out
	$(CARGO) bench --bench guarantee
	$(CARGO) bench --bench state
	$(CARGO) bench --bench changelog
	$(CARGO) bench --bench snapshot

## Tansu, an Apache-Kafka-compatible broker, built once into .tools/ (about 10 minutes on 2 cores;
## the `dynostore` feature brings its storage engines, the default build has none).
tansu: $(TANSU)
$(TANSU):
	$(CARGO) install tansu --version $(TANSU_VERSION) --features dynostore --locked --root $(TOOLS)

broker-start: $(TANSU)
	@if [ -f $(TANSU_PID) ] && kill -0 $$(cat $(TANSU_PID)) 2>/dev/null; then echo "tansu already running"; else \
	  $(TANSU) broker --storage-engine memory://tansu/ --listener-url tcp://127.0.0.1:$(TANSU_PORT) \
	    --advertised-listener-url tcp://127.0.0.1:$(TANSU_PORT) > $(TOOLS)/tansu.log 2>&1 & echo $$! > $(TANSU_PID); \
	  for i in $$(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/$(TANSU_PORT)) 2>/dev/null && break; sleep 0.2; done; \
	  echo "tansu listening on 127.0.0.1:$(TANSU_PORT)"; fi

broker-stop:
	@if [ -f $(TANSU_PID) ]; then kill $$(cat $(TANSU_PID)) 2>/dev/null || true; rm -f $(TANSU_PID); fi

## The demo against the local Tansu broker instead of the embedded one.
demo-broker: broker-start
	$(CARGO) run --release --quiet -- demo --brokers 127.0.0.1:$(TANSU_PORT); status=$$?; $(MAKE) --no-print-directory broker-stop; exit $$status

## Formatting, then clippy with warnings as errors, with and without the Kafka feature (the
## engine, `replay` and `normalize` build without librdkafka). `.ci/run` runs it before `make test`.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --no-default-features -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
