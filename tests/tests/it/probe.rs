//! The capability probe asks the broker the data lives on: the shared broker under test, a
//! private Tansu, and the broker [`PrivateBroker::start`] hands out are each probed at their own
//! address, so that a `read_committed` consumer is compared with the committed view only where
//! the broker holding the data hides aborted records.

use switchboard_tests::broker::{BROKER_KIND_ENV, PrivateBroker};
use switchboard_tests::{kafka_bootstrap, probe};

fn on_tansu() -> bool {
    std::env::var(BROKER_KIND_ENV).as_deref() == Ok("tansu")
}

#[test]
fn the_probe_reports_what_the_broker_under_test_does_with_aborted_transactions() {
    let capabilities = probe::probe_at(&kafka_bootstrap()).expect("probe runs");
    assert!(
        capabilities.transactions,
        "every supported broker accepts transactions"
    );
    // Tansu's measured gap: aborted records reach read_committed consumers; anything else is
    // taken to be a real Kafka, which must hide them.
    assert_eq!(
        capabilities.hides_aborted,
        !on_tansu(),
        "{capabilities:?} on {}",
        kafka_bootstrap()
    );
    assert_eq!(probe::capabilities().unwrap(), capabilities, "cached per address");
}

#[test]
fn a_private_tansu_is_probed_as_itself_not_as_the_broker_under_test() {
    let tansu = PrivateBroker::start_pausable().unwrap();
    assert!(tansu.is_tansu());
    let capabilities = probe::capabilities_at(&tansu.bootstrap()).unwrap();
    assert!(capabilities.transactions);
    assert!(
        !capabilities.hides_aborted,
        "Tansu shows aborted records to read_committed readers, whatever SWITCHBOARD_TEST_KAFKA names"
    );
    assert_eq!(probe::capabilities_at(&tansu.bootstrap()).unwrap(), capabilities);
}

#[test]
fn the_isolated_broker_is_the_real_kafka_under_test_when_there_is_one() {
    let broker = PrivateBroker::start().unwrap();
    assert_eq!(broker.is_tansu(), on_tansu());
    if !on_tansu() {
        assert_eq!(broker.bootstrap(), kafka_bootstrap());
    }
    assert_eq!(
        probe::capabilities_at(&broker.bootstrap()).unwrap().hides_aborted,
        !on_tansu(),
        "exactly-once assertions on this broker's data compare with a read_committed consumer iff it is a real Kafka"
    );
}
