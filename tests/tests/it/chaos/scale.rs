//! Processor scale-out and scale-in under load: one instance, then three (distinct instance ids,
//! so distinct transactional ids), then one SIGKILLed mid-transaction and one SIGTERMed:
//! rebalances, restores and fencing while records flow; the killed one comes back later under its
//! id (as a StatefulSet's pod does), fencing its dead transaction. Nothing lost, nothing doubled,
//! and a partition whose committed offset cannot be read is held back (said in a WARN) rather
//! than processed again from its beginning.

use std::time::Duration;

use super::supervise::{self, Supervised};
use super::{LOAD, ONE_AT_A_TIME, Stack, callbacks, events, send_all, url, verify};

/// No new row for this long fails (an instance up without progress).
const STALL: Duration = Duration::from_secs(150);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_processor_scale_out_and_in_under_load_loses_and_doubles_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut stack = Stack::start().await;
    let callbacks = callbacks(events(), &url(&stack));
    let load = tokio::spawn(send_all(url(&stack), callbacks.clone(), LOAD, |_| {}));
    let mut p0 = Supervised::new("chaos-0", &[], stack.processor.take().unwrap());
    let mut rng = switchboard_tests::Rng::seeded("scale");

    // Scale out: two more instances join while records flow.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p1 = stack.spawn_processor("chaos-1", &[]);
    let p2 = stack.spawn_processor("chaos-2", &[]);
    // Let the group settle (a join takes about half the 6 s session timeout on Tansu) and the
    // new members restore and process. (A processor SIGTERMed before it runs its loop dies of
    // the signal instead of draining.)
    for id in ["chaos-1", "chaos-2"] {
        supervise::wait_for_log(
            &stack,
            id,
            "partitions assigned; restoring their state",
            Duration::from_secs(60),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(3_000 + rng.below(2_000))).await;

    // Scale in: one dies mid-transaction (under load a transaction is open almost always),
    // one leaves cleanly.
    drop(p1); // SIGKILL
    println!("chaos-1 SIGKILLed");
    tokio::time::sleep(Duration::from_millis(2_000 + rng.below(2_000))).await;
    let code = p2.terminate();
    println!("chaos-2 SIGTERMed: exit {code:?}");
    assert_eq!(code, Some(0), "a SIGTERMed processor exits 0 after draining");

    // chaos-1's transaction stays open: Apache Kafka aborts it after the transaction timeout
    // (10 s by default), the dev broker never does, and read_committed readers of its output
    // partitions (the sink) wait for it until then. A supervisor (StatefulSet) restarts chaos-1
    // with its id, which fences the dead producer and aborts its transaction: done here after
    // the transaction timeout, as the broker would.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut p1 = Supervised::new("chaos-1", &[], stack.spawn_processor("chaos-1", &[]));
    println!("chaos-1 restarted");

    supervise::until_stored(&mut stack, &mut [&mut p0, &mut p1], callbacks.len() as i64, STALL).await;
    let sent = load.await.unwrap();
    let (records, ids, repeated) = supervise::emitted_calls(&stack);
    println!(
        "scale out and in: restarts after a non-zero exit {} / {} / switchboard.calls {records} records for {ids} event ids ({repeated} repeated: aborted or re-emitted)",
        p0.restarts + p1.restarts,
        supervise::failure_paths(&stack),
    );
    stack.processor = p0.process.take();
    drop(p1);
    verify("scale out and in", &stack, &callbacks, &sent).await;
}
