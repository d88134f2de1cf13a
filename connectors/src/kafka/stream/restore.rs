//! Reading back what commits wrote: the latest checkpoint of each task from
//! the `{application_id}-checkpoints` topic, and changelog ranges into a
//! task's stores.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use weir_runtime::{Task, TaskCheckpoint};
use weir_topology::store::{ChangelogRecord, Checkpoint};

use crate::kafka::{assign_at, ClientSettings};
use crate::{Error, Result};

const POLL: Duration = Duration::from_millis(100);
/// How long a restore may see no progress before it gives up.
const STALL: Duration = Duration::from_secs(30);
/// How often a long restore logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Records written per `TaskState::restore` call (each followed by a
/// checkpoint, so a crash mid-restore resumes from there). The records are
/// single-key sled inserts, so this bounds only the decoded records held
/// in memory, not sled's garbage (as the atomic batches of 500 did).
const BATCH: usize = 10_000;

fn consumer(settings: &ClientSettings) -> Result<BaseConsumer> {
    settings
        .standalone_consumer_config()
        .create()
        .map_err(|e| Error::kafka("creating the restore consumer", e))
}

/// Read `[from, to)` of one partition, handing each message's (offset, key,
/// value) to `f`.
fn read_range(
    settings: &ClientSettings,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
    mut f: impl FnMut(i64, Option<&[u8]>, Option<&[u8]>) -> Result<()>,
) -> Result<()> {
    if from >= to {
        return Ok(());
    }
    let c = consumer(settings)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))
        .map_err(|e| Error::kafka(format!("restore position of {topic}/{partition}"), e))?;
    assign_at(&c, &tpl, Duration::from_secs(10))?;
    let mut last_progress = Instant::now();
    let mut next = from;
    // Progress is noted when a poll finds nothing (a clock read per record
    // is measurable at restore rates): did `next` move since the last one?
    let mut next_at_last_check = from;
    while next < to {
        match c.poll(POLL) {
            Some(Ok(m)) => {
                if m.offset() >= to {
                    break;
                }
                next = m.offset() + 1;
                f(m.offset(), m.key(), m.payload())?;
            }
            Some(Err(e)) => return Err(Error::kafka(format!("reading {topic}/{partition}"), e)),
            None => {
                // A compacted topic may have no record at `to - 1`: the high
                // watermark says when there is nothing more to read.
                let (_, high) = c
                    .fetch_watermarks(topic, partition, Duration::from_secs(5))
                    .map_err(|e| Error::kafka(format!("watermarks of {topic}/{partition}"), e))?;
                let at_end = c
                    .position()
                    .ok()
                    .and_then(|p| p.find_partition(topic, partition).map(|e| e.offset()))
                    .map(|o| matches!(o, Offset::Offset(o) if o >= high.min(to)))
                    .unwrap_or(false);
                if at_end || next >= high {
                    break;
                }
                if next != next_at_last_check {
                    next_at_last_check = next;
                    last_progress = Instant::now();
                }
                if last_progress.elapsed() > STALL {
                    return Err(Error::Timeout {
                        what: format!("{topic}/{partition} to be readable up to offset {to} (at {next})"),
                        after: STALL,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Each task's latest checkpoint with its offset, by task id ("0_1").
pub type LatestCheckpoints = HashMap<String, (i64, TaskCheckpoint)>;

/// The latest checkpoint of every task in the checkpoints topic, read whole
/// (the fallback when the group's offsets hold no pointers: a group
/// committed by an older weir), and how many records were read.
pub fn read_checkpoints(settings: &ClientSettings, topic: &str) -> Result<(LatestCheckpoints, u64)> {
    let c = consumer(settings)?;
    let (low, high) = c
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .map_err(|e| Error::kafka(format!("watermarks of {topic}"), e))?;
    drop(c);
    let mut out = HashMap::new();
    let mut records = 0u64;
    read_range(settings, topic, 0, low, high, |offset, key, value| {
        records += 1;
        let (Some(key), Some(value)) = (key, value) else {
            return Ok(());
        };
        let task = String::from_utf8_lossy(key).into_owned();
        out.insert(task, (offset, decode_checkpoint(topic, offset, value)?));
        Ok(())
    })?;
    Ok((out, records))
}

/// The prefix of the consumer-offset metadata that points at a task's
/// latest checkpoint record: `weir-checkpoint@{offset}` (offset in the
/// checkpoints topic). Each commit stores it with the task's input offsets,
/// so a new owner reads one record per task instead of the whole topic.
const POINTER: &str = "weir-checkpoint@";

/// The offset-commit metadata pointing at the checkpoint record at `offset`.
pub fn checkpoint_pointer(offset: i64) -> String {
    format!("{POINTER}{offset}")
}

/// The checkpoint offset `metadata` points at, if it is such a pointer.
pub fn parse_checkpoint_pointer(metadata: &str) -> Option<i64> {
    metadata.strip_prefix(POINTER)?.parse().ok().filter(|o: &i64| *o >= 0)
}

/// The checkpoints at `pointers` ((task id, offset) pairs), one record read
/// each. `None` if a record is not there or belongs to another task (a
/// compacted topic may have dropped it for a newer one): the caller then
/// reads the whole topic.
pub fn read_checkpoints_at(
    settings: &ClientSettings,
    topic: &str,
    pointers: &[(String, i64)],
) -> Result<Option<HashMap<String, TaskCheckpoint>>> {
    // Tasks commit at about the same time, so their pointers are usually
    // close: one read from the lowest to the highest (one consumer) beats
    // one read per task; far apart (a task idle for long), one each.
    const SPAN: i64 = 10_000;
    let (Some(low), Some(high)) = (
        pointers.iter().map(|(_, o)| *o).min(),
        pointers.iter().map(|(_, o)| *o).max(),
    ) else {
        return Ok(Some(HashMap::new()));
    };
    let ranges: Vec<(i64, i64)> = if high - low <= SPAN {
        vec![(low, high + 1)]
    } else {
        pointers.iter().map(|(_, o)| (*o, o + 1)).collect()
    };
    let mut out = HashMap::new();
    for (from, to) in ranges {
        read_range(settings, topic, 0, from, to, |at, key, value| {
            for (task, offset) in pointers {
                if at == *offset && key == Some(task.as_bytes()) {
                    if let Some(v) = value {
                        out.insert(task.clone(), decode_checkpoint(topic, at, v)?);
                    }
                }
            }
            Ok(())
        })?;
    }
    // A record that is not there (compacted away) or not the task's: the
    // caller reads the whole topic.
    Ok((out.len() == pointers.len()).then_some(out))
}

fn decode_checkpoint(topic: &str, offset: i64, value: &[u8]) -> Result<TaskCheckpoint> {
    let cp = Checkpoint::decode(value)
        .ok_or_else(|| Error::Corrupt(format!("{topic} offset {offset}: not a weir checkpoint")))?;
    TaskCheckpoint::from_checkpoint(&cp).map_err(|e| Error::Corrupt(format!("{topic} offset {offset}: {e}")))
}

/// Bring `task` to the state `target` describes: apply each logged store's
/// changelog from the task's own position up to the target's, then adopt
/// the target checkpoint. Returns the number of records applied per store,
/// in the order of `changelogs`. `progress(store, remaining)` hears how
/// many changelog records each store still has to read: at its start,
/// every few thousand records, and 0 at its end.
pub fn restore_task(
    settings: &ClientSettings,
    task: &mut Task,
    changelogs: &[(String, String)],
    target: &TaskCheckpoint,
    progress: &mut dyn FnMut(&str, i64),
) -> Result<Vec<u64>> {
    let mut per_store = Vec::with_capacity(changelogs.len());
    let partition = task.id().partition;
    let started = Instant::now();
    let mut total = 0u64;
    for (store, topic) in changelogs {
        let before = total;
        let from = task.changelog_position(store).unwrap_or(0);
        let to = target
            .changelog
            .iter()
            .find(|(s, _)| s == store)
            .map(|(_, p)| *p)
            .unwrap_or(from);
        // Ranges written by commits that never finished: not state.
        let skips: Vec<(i64, i64)> = target
            .changelog_skips
            .iter()
            .filter(|(s, _, _)| s == store)
            .map(|(_, a, b)| (*a, *b))
            .collect();
        let mut batch: Vec<ChangelogRecord> = Vec::with_capacity(BATCH.min((to - from).max(0) as usize));
        let mut applied_to = from;
        let flush = |task: &mut Task, batch: &mut Vec<ChangelogRecord>, position: i64| -> Result<()> {
            // Each batch lands with a checkpoint that moves only this
            // store's position: a crash mid-restore resumes from there.
            task.set_changelog_position(store, position);
            let cp = task.checkpoint();
            task.state()
                .restore(store, batch, &cp)
                .map_err(|e| Error::State(format!("task {}: restoring {store}: {e}", task.id())))?;
            batch.clear();
            Ok(())
        };
        let mut last_report = Instant::now();
        progress(store, (to - from).max(0));
        read_range(settings, topic, partition, from, to, |offset, key, value| {
            if total & 4095 == 0 {
                progress(store, to - offset);
            }
            // Long restores say how far they got (the daemon is not ready
            // meanwhile, and an operator wants to know why).
            if total & 4095 == 0 && last_report.elapsed() >= PROGRESS_EVERY {
                last_report = Instant::now();
                let secs = started.elapsed().as_secs_f64();
                tracing::info!(
                    task = %task.id(),
                    store = %store,
                    at = offset,
                    of = to,
                    records_per_s = format!("{:.0}", total as f64 / secs.max(1e-9)),
                    "restoring"
                );
            }
            let Some(key) = key else { return Ok(()) };
            if skips.iter().any(|&(a, b)| (a..b).contains(&offset)) {
                return Ok(());
            }
            batch.push(ChangelogRecord {
                key: key.to_vec(),
                value: value.map(<[u8]>::to_vec),
            });
            applied_to = offset + 1;
            total += 1;
            if batch.len() >= BATCH {
                flush(task, &mut batch, applied_to)?;
            }
            Ok(())
        })?;
        flush(task, &mut batch, to)?;
        progress(store, 0);
        per_store.push(total - before);
    }
    task.adopt(target);
    task.commit_state().map_err(|e| Error::Task {
        task: task.id().to_string(),
        reason: format!("committing the restored state: {e}"),
    })?;
    let secs = started.elapsed().as_secs_f64();
    if total > 0 {
        tracing::info!(
            task = %task.id(),
            records = total,
            seconds = format!("{secs:.2}"),
            records_per_s = format!("{:.0}", total as f64 / secs.max(1e-9)),
            "restore done"
        );
    }
    Ok(per_store)
}
