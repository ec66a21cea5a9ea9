use switchboard_tests::probe;

/// `make test` sets this to `tansu` when it runs the suite on the Tansu dev broker.
const BROKER_KIND_ENV: &str = "SWITCHBOARD_TEST_BROKER_KIND";

#[test]
fn the_probe_reports_what_the_broker_does_with_aborted_transactions() {
    let capabilities = probe::probe().expect("probe runs");
    assert!(
        capabilities.transactions,
        "every supported broker accepts transactions"
    );
    match std::env::var(BROKER_KIND_ENV).as_deref() {
        // Tansu's measured gap: aborted records reach read_committed consumers.
        Ok("tansu") => {
            assert!(
                !capabilities.hides_aborted,
                "Tansu was expected to show aborted records"
            );
            let reason = capabilities.filtering_gap().expect("a gap on Tansu");
            assert!(reason.contains("aborted transactions"), "{reason}");
            assert!(probe::require_aborted_filtering().is_err());
        }
        // Anything else is taken to be a real Kafka, which must filter.
        _ => {
            assert!(
                capabilities.hides_aborted,
                "a real Kafka hides aborted records from read_committed"
            );
            assert_eq!(probe::require_aborted_filtering(), Ok(()));
        }
    }
}
