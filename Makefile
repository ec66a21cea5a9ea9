# switchboard's entry points. `make dev` runs the stack on the embedded defaults; `make check` is the
# fast inner loop (no broker); `make test` runs every check CI runs.
.PHONY: dev check test fmt lint broker bench bench-trace bench-processor bench-state chaos

dev:
	scripts/dev

# Formatting, lints, and the tests that need no broker, registry or database: every crate's unit
# tests and doc tests. Under two minutes warm (see README.md, Development stack).
check:
	cargo fmt --all -- --check
	$(MAKE) --no-print-directory lint
	cargo test --workspace --locked --lib -- $(SKIP_NEEDS_SERVICES)
	cargo test --workspace --locked --doc

# The unit tests (`--lib`) that start a private broker or need PostgreSQL: `make test` runs them,
# `make check` skips them. They live in processor/src; moved into processor/tests/it, they would
# leave this list.
SKIP_NEEDS_SERVICES := \
	--skip txn::tests::an_abort_that_times_out_is_called_again_until_it_completes \
	--skip txn::tests::a_commit_across_a_long_broker_pause_recovers_in_place \
	--skip txn::tests::a_transaction_that_wrote_nothing_still_commits_its_offsets \
	--skip txn::tests::an_abort_that_never_completes_is_fatal_within_its_bound \
	--skip txn::tests::a_rewind_never_turns_an_unreadable_committed_offset_into_the_beginning \
	--skip restore::tests::a_position_to_reset_reads_again_from_the_earliest_record \
	--skip ::postgres::

test:
	scripts/test

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets --locked -- -D warnings

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

# The processor's state store at scale: RSS at 2,000 callbacks/s with 1-5 million remembered events,
# full restores from the changelogs, a restart with the store; writes bench/state-results.md.
bench-state:
	scripts/bench-state

# Processor throughput, exactly-once vs at-least-once, on the same pre-loaded input (a report).
bench-processor:
	cargo bench -p switchboard-processor --bench eos_vs_alo

# The chaos suite at full size (10,000 events per scenario; make test runs it with 2,000): the
# stack as processes under signed load, with SIGKILLs, a paused broker (10 s, and 20 s beyond the
# transaction timeout), a registry outage and a registry flap (404/500/429), an ingest SIGTERM and
# processor scale-out/in; then the processor-level fault tests of the actions' retry ladder (a
# rebalance while retry partitions are paused, slow targets) and of replay (idle partitions, a
# live replay while the processor lags) and of the state store (SIGKILLs at random moments, an abort
# between a Kafka commit and its store write, a restore that cannot complete). Each scenario prints the database's and the committed
# view's `duplicates / lost`.
chaos:
	cargo build --workspace --bins
	SWITCHBOARD_CHAOS_EVENTS=10000 scripts/test -p switchboard-tests --test it chaos -- --nocapture --test-threads 1
	scripts/test -p switchboard-processor --test it -- --nocapture --test-threads 1 actions_faults replay_faults crash state
