# The two commands of the README:
#   make run    start a local 3-node torua cluster on loopback
#   make test   run the whole test suite (what CI runs)
# Both install what is missing first (scripts/setup.sh). One cargo profile (release) serves run, tests and
# benchmarks, so Kuzu's C++ is compiled once per target directory; CARGO_TARGET_DIR may point anywhere.

SHELL := /bin/bash
NODES ?= 3
DIR ?= data/dev
CARGO_TARGET_DIR ?= $(CURDIR)/target
export CARGO_TARGET_DIR
# Process tests start many nodes each; running test functions two at a time keeps a 2-core machine honest.
TEST_THREADS ?= 2

.PHONY: run test build setup bench fuzz fmt clippy clean-dev

setup:
	@scripts/setup.sh >/dev/null

build:
	eval "$$(scripts/setup.sh)" && cargo build --release --workspace --bins

run:
	eval "$$(scripts/setup.sh)" && cargo build --release --workspace --bins && \
	  "$(CARGO_TARGET_DIR)/release/torua" dev --nodes $(NODES) --dir $(DIR)

test:
	eval "$$(scripts/setup.sh)" && cargo build --release --workspace --bins && \
	  scripts/check_openapi.sh && \
	  cargo test --release --workspace --no-fail-fast -- --test-threads=$(TEST_THREADS)

# The fuzzers of make test, run longer: generated Cypher against a real shard, arbitrary log and
# peer-message bytes, and schemathesis against a 3-node cluster. FUZZ_SEED varies the run.
FUZZ_SEED ?= 1
fuzz:
	eval "$$(scripts/setup.sh)" && cargo build --release --workspace --bins && \
	  TORUA_FUZZ_CASES=20000 TORUA_FUZZ_SEED=$(FUZZ_SEED) cargo test --release -p torua --lib fuzz && \
	  TORUA_FUZZ_EXAMPLES=300 TORUA_FUZZ_MAX_TIME=900 TORUA_FUZZ_SEED=$(FUZZ_SEED) cargo test --release -p torua --test fuzz_process -- --nocapture

bench:
	eval "$$(scripts/setup.sh)" && cargo build --release --workspace --bins && \
	  scripts/bench.sh

fmt:
	cargo fmt --all

clippy:
	cargo clippy --release --workspace --all-targets -- -D warnings

clean-dev:
	rm -rf $(DIR)
