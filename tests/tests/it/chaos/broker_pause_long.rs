//! The broker frozen (SIGSTOP) for longer than the transaction timeout while transactions are
//! open: commits and aborts time out, deliveries expire. The processor must either recover by
//! itself or exit non-zero for its supervisor (the test restarts it then); one that exits 0, or
//! stays up without progress, fails. Every event ends in the database exactly once.

use std::time::Duration;

use super::supervise::{self, Supervised};
use super::{LOAD, ONE_AT_A_TIME, Stack, callbacks, events, send_all, url, verify};

/// Short, so that the pause outlasts it by far while the scenario stays short.
const TRANSACTION_TIMEOUT: &str = "3s";
/// Long transactions, so that one is open when the broker freezes (under load, almost always).
const COMMIT_INTERVAL: &str = "1s";
/// Longer than the transaction timeout (and the deliveries' timeout, which librdkafka bounds by
/// it) several times over, and than one attempt of a transactional call (a quarter of the
/// processor's one-minute bound), so that a commit or an abort in flight times out and is made
/// again.
const PAUSE: Duration = Duration::from_secs(20);
/// No new row for this long fails: above the processor's bound on a call that does not
/// complete (one minute), a restart, a group join and a restore.
const STALL: Duration = Duration::from_secs(150);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_broker_paused_longer_than_the_transaction_timeout_recovers_or_restarts() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let env = [
        ("SWITCHBOARD_TRANSACTION_TIMEOUT", TRANSACTION_TIMEOUT),
        ("SWITCHBOARD_COMMIT_INTERVAL", COMMIT_INTERVAL),
    ];
    let mut stack = Stack::start_pausable_with(&env).await;
    let callbacks = callbacks(events(), &url(&stack));
    let load = tokio::spawn(send_all(url(&stack), callbacks.clone(), LOAD, |_| {}));
    let mut processor = Supervised::new("chaos-0", &env, stack.processor.take().unwrap());

    // Freeze the broker once records flow through the whole stack (so transactions are open).
    supervise::until_stored(&mut stack, &mut [&mut processor], 50, Duration::from_secs(60)).await;
    stack.broker.pause().unwrap();
    tokio::time::sleep(PAUSE).await;
    stack.broker.resume().unwrap();

    supervise::until_stored(&mut stack, &mut [&mut processor], callbacks.len() as i64, STALL).await;
    let sent = load.await.unwrap();
    let (records, ids, repeated) = supervise::emitted_calls(&stack);
    println!(
        "broker paused {PAUSE:?} (transaction timeout {TRANSACTION_TIMEOUT}): processor restarts {} / {} / switchboard.calls {records} records for {ids} event ids ({repeated} repeated: aborted or re-emitted)",
        processor.restarts,
        supervise::failure_paths(&stack),
    );
    stack.processor = processor.process.take();
    verify("broker paused long", &stack, &callbacks, &sent).await;
}
