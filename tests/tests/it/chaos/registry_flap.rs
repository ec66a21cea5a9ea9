//! Schema registry flap: under load, the processor and the sink restart with cold schema caches
//! behind a registry proxy that then answers every request with 404 (a follower that has not
//! replicated the schema), 500 and 429 (`Retry-After`) in turn (~20 s at full size). Ingest keeps
//! the real registry (its schemas are cached since start-up). Nothing may be skipped by the sink,
//! dead-lettered as undecodable by the processor, or stuck in a restore: every event ends in the
//! database exactly once, and `switchboard.dlq` stays empty.

use std::time::Duration;

use switchboard_schemas::topics;
use switchboard_tests::registry_proxy::{Mode, RegistryProxy};

use super::*;

/// `switchboard-processor <args>` as [`Stack::spawn`] starts it, but reading the registry through
/// `registry` (the proxy).
fn spawn_through(stack: &Stack, registry: &str, name: &str, args: &[&str]) -> Proc {
    stack.spawn_instance(
        name,
        args,
        "chaos-0",
        &[("SWITCHBOARD_SCHEMA_REGISTRY_URL", registry)],
    )
}

fn still_running(proc: &mut Option<Proc>, what: &str, logs: &Path) {
    let status = proc.as_mut().and_then(|p| p.0.try_wait().unwrap());
    assert!(
        status.is_none(),
        "the {what} exited ({status:?}) during the registry flap; logs in {}",
        logs.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_a_registry_flap_with_cold_caches_skips_and_dead_letters_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut stack = Stack::start().await;
    let proxy = RegistryProxy::start(&format!("http://127.0.0.1:{}", stack.registry_port))
        .await
        .unwrap();
    let window = if events() >= 2_000 {
        Duration::from_secs(20)
    } else {
        Duration::from_secs(10)
    };
    let callbacks = callbacks(events(), &url(&stack));
    let load = tokio::spawn(send_all(url(&stack), callbacks.clone(), LOAD, |_| {}));

    tokio::time::sleep(Duration::from_secs(3)).await;
    // Cold caches meet a failing registry: restart both behind the proxy while it fails.
    proxy.set(Mode::NotFound);
    stack.processor = None; // SIGKILL
    stack.processor = Some(spawn_through(&stack, proxy.url(), "processor", &[]));
    stack.sink = None; // SIGKILL
    stack.sink = Some(spawn_through(&stack, proxy.url(), "sink", &["sink"]));
    proxy.flap(window, Duration::from_secs(2)).await;
    let logs = stack.logs().to_owned();
    still_running(&mut stack.processor, "processor", &logs);
    still_running(&mut stack.sink, "sink", &logs);
    let refused = proxy.failed();
    println!("registry flap: {refused} registry requests refused over {window:?}");
    assert!(refused > 0, "nothing asked the registry during the flap");

    let sent = load.await.unwrap();
    verify("registry flap", &stack, &callbacks, &sent).await;
    println!(
        "registry flap: {} registry requests forwarded after it",
        proxy.forwarded()
    );
    let bootstrap = stack.broker.bootstrap();
    let dead_lettered = tokio::task::spawn_blocking(move || {
        switchboard_tests::consume::read_to_end(&bootstrap, topics::DLQ, "read_uncommitted")
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        dead_lettered.len(),
        0,
        "records dead-lettered during a registry flap; logs in {}",
        stack.logs().display()
    );
    let sink_log = std::fs::read_to_string(stack.logs().join("sink.log")).unwrap_or_default();
    assert!(
        !sink_log.contains("undecodable"),
        "the sink called a record undecodable; logs in {}",
        stack.logs().display()
    );
}
