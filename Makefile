# switchboard's entry points. `make dev` runs the stack on the embedded defaults; `make test` runs
# every check CI runs.
.PHONY: dev test fmt lint broker bench bench-processor chaos

dev:
	scripts/dev

test:
	scripts/test

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets -- -D warnings

broker:
	scripts/broker install

# Ingest throughput against a bare axum server and the raw Kafka producer, end-to-end latency, peak
# RSS and the processor's EOS/ALO ratio, on a private stack; writes bench/results.md (a report).
bench:
	scripts/bench

# Processor throughput, exactly-once vs at-least-once, on the same pre-loaded input (a report).
bench-processor:
	cargo bench -p switchboard-processor --bench eos_vs_alo

# The chaos suite at full size (10,000 events per scenario; make test runs it with 2,000): the
# stack as processes under signed load, with SIGKILLs, a paused broker, a registry outage and an
# ingest SIGTERM. Prints `events sent / 2xx / rows / duplicates / lost` per scenario.
chaos:
	cargo build --workspace --bins
	SWITCHBOARD_CHAOS_EVENTS=10000 cargo test -p switchboard-tests --test it chaos -- --nocapture --test-threads 1
