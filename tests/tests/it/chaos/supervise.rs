//! What the fault scenarios of the transaction loop share: the test playing the processors'
//! supervisor (restart on a non-zero exit; a clean exit nobody asked for, or no progress, fails),
//! and a diagnostic count of records emitted more than once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use switchboard_schemas::headers;
use switchboard_schemas::topics;

use super::{Proc, Stack, open, stored};

/// A service instance the test supervises: a processor, or the sink.
pub(super) struct Supervised {
    pub(super) id: &'static str,
    /// The processor's subcommand: none for the processing loop, `sink` for the sink.
    args: &'static [&'static str],
    pub(super) env: Vec<(&'static str, &'static str)>,
    pub(super) process: Option<Proc>,
    pub(super) restarts: usize,
}

impl Supervised {
    /// Processor instance `id`, started with the extra environment `env`.
    pub(super) fn new(id: &'static str, env: &[(&'static str, &'static str)], process: Proc) -> Self {
        Self {
            id,
            args: &[],
            env: env.to_vec(),
            process: Some(process),
            restarts: 0,
        }
    }

    /// The stack's sink.
    fn sink(process: Option<Proc>) -> Self {
        Self {
            id: "sink",
            args: &["sink"],
            env: Vec::new(),
            process,
            restarts: 0,
        }
    }

    /// Restarts the instance if it exited non-zero; panics if it exited 0 (nobody asked it to
    /// stop).
    fn check(&mut self, stack: &Stack) {
        let Some(process) = &mut self.process else { return };
        let Some(status) = process.0.try_wait().unwrap() else {
            return;
        };
        assert!(
            !status.success(),
            "{} exited 0 without being asked to; logs in {}",
            self.id,
            stack.logs().display()
        );
        println!("{} exited with {status}: restarting it", self.id);
        self.restarts += 1;
        self.process = Some(if self.args.is_empty() {
            stack.spawn_processor(self.id, &self.env)
        } else {
            stack.spawn(self.id, self.args)
        });
    }
}

/// Supervises `instances` and the stack's sink (each restarted after a non-zero exit, as an
/// orchestrator would) until the database holds `expected` events. Fails when nothing new is
/// stored for `stall` (an instance that stays up without progress), with what explains it in the
/// message (a CI machine's temporary files do not outlive the run): where every partition
/// stands, the end of every log and the threads of every live instance.
pub(super) async fn until_stored(
    stack: &mut Stack,
    instances: &mut [&mut Supervised],
    expected: i64,
    stall: Duration,
) {
    let db = open(&stack.database_url).await;
    let mut sink = Supervised::sink(stack.sink.take());
    let mut last = (stored(&db).await, Instant::now());
    loop {
        for instance in instances.iter_mut() {
            instance.check(stack);
        }
        sink.check(stack);
        let now = stored(&db).await;
        if now >= expected {
            stack.sink = sink.process.take();
            return;
        }
        if now != last.0 {
            last = (now, Instant::now());
        }
        if last.1.elapsed() >= stall {
            let live = instances.iter().map(|i| &**i).chain([&sink]);
            panic!(
                "no progress for {stall:?} at {now} of {expected} events; logs kept in {}\n{}\n{}\n{}",
                keep_logs(stack).display(),
                offsets(stack),
                log_tails(stack, LOG_TAIL),
                thread_dumps(live),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Frames of each thread in a failure message.
const DUMP_FRAMES: usize = 16;
/// Characters of a frame line in a failure message.
const DUMP_LINE: usize = 160;

/// The stack of every thread of every live instance (`gdb -p`), the frames' lines cut short: where
/// a wedged instance waits.
fn thread_dumps<'a>(instances: impl Iterator<Item = &'a Supervised>) -> String {
    let mut out = String::new();
    for instance in instances {
        let Some(process) = &instance.process else {
            continue;
        };
        let pid = process.0.id();
        out.push_str(&format!("--- threads of {} (pid {pid})\n", instance.id));
        // Reading the debug binary's symbols takes gdb most of a minute on a loaded machine.
        let dump = std::process::Command::new("timeout")
            .args(["180", "gdb", "-p", &pid.to_string(), "-batch", "-nx"])
            .args(["-ex", "set print frame-arguments none"])
            .args(["-ex", "set print address off"])
            .args(["-ex", &format!("thread apply all bt {DUMP_FRAMES}")])
            .stdin(std::process::Stdio::null())
            .output();
        match dump {
            Ok(output) => {
                let before = out.len();
                for line in String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .filter(|l| l.starts_with("Thread ") || l.starts_with('#'))
                {
                    out.extend(line.chars().take(DUMP_LINE));
                    out.push('\n');
                }
                if out.len() == before {
                    let stderr = String::from_utf8_lossy(&output.stderr);
                    out.push_str(&format!(
                        "no threads from gdb ({}): {}\n",
                        output.status,
                        stderr.trim()
                    ));
                }
            }
            Err(error) => out.push_str(&format!("gdb not run: {error}\n")),
        }
    }
    out
}

/// Where every partition of the raw topics and of `switchboard.calls` stands, for a failure
/// message: its high watermark, its last stable offset (the end a `read_committed` reader sees:
/// below the high watermark while a transaction is open there) and the committed offsets of the
/// processors' and the sink's groups.
pub(super) fn offsets(stack: &Stack) -> String {
    let timeout = Duration::from_secs(10);
    let reader = |isolation: &str, group: &str| -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", stack.broker.bootstrap())
            .set("group.id", group)
            .set("isolation.level", isolation)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap()
    };
    // librdkafka's watermark query honours `isolation.level`: a read_committed client is told
    // the last stable offset (Tansu answers 0 while any transaction is open on the partition).
    let stable = reader("read_committed", "chaos-diagnostic");
    let all = reader("read_uncommitted", "chaos-diagnostic");
    let mut out = String::from("partition: high watermark / last stable / processors / sink\n");
    let topics = switchboard_schemas::Source::ALL
        .iter()
        .map(|s| s.raw_topic())
        .chain([topics::CALLS]);
    for topic in topics {
        let Ok(metadata) = all.fetch_metadata(Some(topic), timeout) else {
            out.push_str(&format!("{topic}: no metadata\n"));
            continue;
        };
        for partition in metadata.topics()[0].partitions() {
            let partition = partition.id();
            let end = |client: &BaseConsumer| {
                client
                    .fetch_watermarks(topic, partition, timeout)
                    .map_or(-1, |(_, end)| end)
            };
            let (high, last_stable) = (end(&all), end(&stable));
            let committed = |group: &str| {
                let mut list = TopicPartitionList::new();
                list.add_partition(topic, partition);
                reader("read_committed", group)
                    .committed_offsets(list, timeout)
                    .ok()
                    .and_then(|l| l.find_partition(topic, partition).map(|e| e.offset()))
            };
            out.push_str(&format!(
                "{topic}[{partition}]: {high} / {last_stable} / {:?} / {:?}\n",
                committed("switchboard-processor"),
                committed("switchboard-sink"),
            ));
        }
    }
    out
}

/// Lines of each log in a failure message.
const LOG_TAIL: usize = 15;
/// Characters of a log line in a failure message.
const LOG_LINE: usize = 400;

/// The last `lines` lines of every log of the stack, each cut to [`LOG_LINE`] characters.
pub(super) fn log_tails(stack: &Stack, lines: usize) -> String {
    let mut logs: Vec<_> = std::fs::read_dir(stack.logs())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    let mut out = String::new();
    for path in logs {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        out.push_str(&format!(
            "--- {} (last {} of {} lines)\n",
            path.file_name().unwrap_or_default().to_string_lossy(),
            lines.min(all.len()),
            all.len()
        ));
        for line in &all[all.len().saturating_sub(lines)..] {
            out.extend(line.chars().take(LOG_LINE));
            out.push('\n');
        }
    }
    out
}

/// Records of `switchboard.calls` per event id, read uncommitted: a diagnostic of re-emitted
/// records (on the dev broker it includes records of aborted transactions, which a
/// `read_committed` consumer there sees too). `(records, event ids, records beyond one per id)`.
pub(super) fn emitted_calls(stack: &Stack) -> (usize, usize, usize) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", stack.broker.bootstrap())
        .set("group.id", "chaos-diagnostic")
        .set("isolation.level", "read_uncommitted")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(topics::CALLS), timeout).unwrap();
    let mut assignment = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for partition in metadata.topics()[0].partitions() {
        let (_, high) = consumer
            .fetch_watermarks(topics::CALLS, partition.id(), timeout)
            .unwrap();
        ends.insert(partition.id(), high);
        assignment
            .add_partition_offset(topics::CALLS, partition.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut done: HashMap<i32, bool> = ends.iter().map(|(p, high)| (*p, *high == 0)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.values().any(|d| !d) && Instant::now() < deadline {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        if message.offset() + 1 >= ends[&message.partition()] {
            done.insert(message.partition(), true);
        }
        let id = message.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == headers::EVENT_ID)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
        if let Some(id) = id {
            *ids.entry(id).or_default() += 1;
        }
    }
    let records: usize = ids.values().sum();
    (records, ids.len(), records - ids.len())
}

/// Lines of the processor logs (every instance, every restart) containing `pattern`.
pub(super) fn processor_log_lines(stack: &Stack, pattern: &str) -> usize {
    std::fs::read_dir(stack.logs())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("processor"))
        .map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .filter(|line| line.contains(pattern))
                .count()
        })
        .sum()
}

/// Log lines of the transaction loop's failure paths, for the summary line.
pub(super) fn failure_paths(stack: &Stack) -> String {
    format!(
        "calls made again {} / transactions aborted {} / partitions held back {}",
        processor_log_lines(stack, "transactional call not completed; calling it again"),
        processor_log_lines(stack, "transaction aborted; rewinding"),
        processor_log_lines(stack, "partition not processed until it can be restored"),
    )
}

/// Copies the stack's logs out of its temporary directory (removed when the test ends), for a
/// failure message.
fn keep_logs(stack: &Stack) -> std::path::PathBuf {
    let kept = std::env::temp_dir().join(format!(
        "switchboard-chaos-logs-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
    ));
    std::fs::create_dir_all(&kept).unwrap();
    for entry in std::fs::read_dir(stack.logs()).unwrap().filter_map(Result::ok) {
        if entry.file_name().to_string_lossy().ends_with(".log") {
            let _ = std::fs::copy(entry.path(), kept.join(entry.file_name()));
        }
    }
    kept
}

/// Waits until the log of processor `instance_id` contains `pattern` (at most `timeout`).
pub(super) async fn wait_for_log(stack: &Stack, instance_id: &str, pattern: &str, timeout: Duration) {
    let path = stack.logs().join(format!("processor-{instance_id}.log"));
    let deadline = Instant::now() + timeout;
    while !std::fs::read_to_string(&path)
        .unwrap_or_default()
        .contains(pattern)
    {
        assert!(
            Instant::now() < deadline,
            "processor {instance_id} never logged {pattern:?}; logs kept in {}",
            keep_logs(stack).display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
