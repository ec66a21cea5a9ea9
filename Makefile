# switchboard's entry points. `make dev` runs the stack on the embedded defaults; `make test` runs
# every check CI runs.
.PHONY: dev test fmt lint broker bench bench-trace bench-processor chaos

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

# Only the tracing overhead part of `make bench` (ingest throughput, OTLP export off vs on at 10 %),
# written into its section of bench/results.md.
bench-trace:
	scripts/bench-trace

# Processor throughput, exactly-once vs at-least-once, on the same pre-loaded input (a report).
bench-processor:
	cargo bench -p switchboard-processor --bench eos_vs_alo

# The chaos suite at full size (10,000 events per scenario; make test runs it with 2,000): the
# stack as processes under signed load, with SIGKILLs, a paused broker (10 s, and 20 s beyond the
# transaction timeout), a registry outage and a registry flap (404/500/429), an ingest SIGTERM and
# processor scale-out/in; then the processor-level fault tests of the actions' retry ladder (a
# rebalance while retry partitions are paused, slow targets) and of replay (idle partitions, a
# live replay while the processor lags). Each scenario prints the database's and the committed
# view's `duplicates / lost`.
chaos:
	cargo build --workspace --bins
	SWITCHBOARD_CHAOS_EVENTS=10000 scripts/test -p switchboard-tests --test it chaos -- --nocapture --test-threads 1
	scripts/test -p switchboard-processor --test it -- --nocapture --test-threads 1 actions_faults replay_faults
