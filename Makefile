# switchboard's entry points. `make dev` runs the stack on the embedded defaults; `make test` runs
# every check CI runs.
.PHONY: dev test fmt lint broker bench-processor

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

# Processor throughput, exactly-once vs at-least-once, on the same pre-loaded input (a report).
bench-processor:
	cargo bench -p switchboard-processor --bench eos_vs_alo
