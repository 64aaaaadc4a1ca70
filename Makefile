# cloudwarden: the two set-up commands are `make demo` and `make test`.
CARGO ?= cargo

.PHONY: all build demo test bench lint fmt clean

all: build

build:
	$(CARGO) build --release

## Run the engine on the built-in demo stream (benign traffic with attack scenarios).
demo:
	$(CARGO) run --release --quiet -- demo

## All tests: unit, property, golden, replay of public datasets, config, schema.
test:
	$(CARGO) test --quiet
	$(CARGO) run --quiet -- check-config deploy/cloudwarden.toml

## Benchmarks (criterion): decode per format, engine over 1M events, state bytes per key.
bench:
	$(CARGO) bench --bench decode
	$(CARGO) bench --bench engine

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
