# cloudwarden: the two set-up commands are `make demo` and `make test`.
CARGO ?= cargo
KAFKA := tests/kafka/broker.sh
KAFKA_LIBS := $(CURDIR)/.tools/kafka/libs
KAFKA_PORT ?= 19092

.PHONY: all build demo demo-broker test bench lint fmt clean kafka broker-start broker-stop

all: build

build:
	$(CARGO) build --release

## The main job on an embedded default: an in-process Kafka broker (librdkafka's mock cluster),
## a realistic stream with attacks, the service, and the alerts as the SIEM reads them.
demo:
	$(CARGO) run --release --quiet -- demo

## Every test: unit, property, golden, public datasets, schemas, CLI, Kafka (librdkafka's mock
## cluster, and Apache Kafka: the tests start their own KRaft nodes from .tools/kafka, installed
## from Maven Central on first use). KAFKA_BOOTSTRAP=host:port runs them on a running broker.
## The Apache Kafka tests run second, on their own: their JVMs would otherwise share the 2 cores
## with the in-process (mock cluster) tests, whose timings they upset.
KAFKA_TESTS := broker_faults:: e2e:: exactly_once_kafka:: faults:: handover:: scale_out:: sigma_kafka::
test: kafka
	$(CARGO) test --quiet -- $(addprefix --skip ,$(KAFKA_TESTS))
	KAFKA_LIBS=$(KAFKA_LIBS) $(CARGO) test --quiet --test it -- $(KAFKA_TESTS)
	$(CARGO) run --quiet -- check-config deploy/cloudwarden.toml

## Benchmarks (criterion, and the service benchmarks against Apache Kafka started by the bench).
bench: kafka
	$(CARGO) bench --bench decode
	$(CARGO) bench --bench engine
	KAFKA_LIBS=$(KAFKA_LIBS) $(CARGO) bench --bench service
	KAFKA_LIBS=$(KAFKA_LIBS) $(CARGO) bench --bench scale_out
	$(CARGO) bench --bench guarantee
	$(CARGO) bench --bench state
	$(CARGO) bench --bench changelog
	$(CARGO) bench --bench snapshot

## Apache Kafka's jars from Maven Central into .tools/kafka/libs (idempotent; needs java and mvn).
kafka:
	@$(KAFKA) install

broker-start: kafka
	@KAFKA_PORT=$(KAFKA_PORT) $(KAFKA) start

broker-stop:
	@$(KAFKA) stop

## The demo against a local Apache Kafka broker instead of the embedded one.
demo-broker: broker-start
	$(CARGO) run --release --quiet -- demo --brokers 127.0.0.1:$(KAFKA_PORT); status=$$?; $(MAKE) --no-print-directory broker-stop; exit $$status

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
