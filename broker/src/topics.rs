//! The broker's topics: names, ids, partition logs and configurations, kept
//! under `{dir}/topics/{name}/` so that they survive a restart.
//!
//! Each topic directory holds `topic.json` (id, partition count, config
//! overrides; written to a temporary file and renamed, so a crash leaves the
//! old or the new one) and one directory per partition for its log. A topic
//! is deleted by renaming its directory into `{dir}/deleted/` first, so a
//! crash mid-delete never resurrects half a topic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::log::{LogError, PartitionLog};
use crate::topic_config::{ConfigError, TopicConfig};

/// Kafka's limit on topic name length.
const MAX_NAME_LEN: usize = 249;

/// One partition: its log, behind a mutex held only for one append or read.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    log: Mutex<PartitionLog>,
}

impl Partition {
    pub fn log(&self) -> MutexGuard<'_, PartitionLog> {
        // A panic while holding the lock leaves the log as the last
        // completed call wrote it (appends are one write each).
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One topic.
pub struct Topic {
    pub name: String,
    pub id: uuid::Uuid,
    pub config: TopicConfig,
    pub partitions: Vec<Arc<Partition>>,
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct TopicFile {
    id: uuid::Uuid,
    partitions: i32,
    #[serde(default)]
    config: TopicConfig,
}

/// Why a topic operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic `{0}` already exists")]
    Exists(String),
    #[error("topic `{0}` does not exist")]
    Unknown(String),
    #[error("invalid topic name `{name}`: {why}")]
    InvalidName { name: String, why: &'static str },
    #[error("invalid partition count {count} for `{topic}`: {why}")]
    InvalidPartitions {
        topic: String,
        count: i32,
        why: &'static str,
    },
    #[error("{}", .0.0)]
    Config(ConfigError),
    #[error("topic `{topic}`: {source}")]
    Log { topic: String, source: LogError },
    #[error("topic `{topic}`: {source}")]
    Io { topic: String, source: std::io::Error },
}

/// Every topic of the broker.
pub struct Topics {
    dir: PathBuf,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Bumped after every append, so that long-polling fetches answer as
    /// soon as data arrives instead of at `max.wait`.
    appended: watch::Sender<u64>,
}

impl Topics {
    /// Load every topic under `{dir}/topics`, recovering each partition log.
    pub fn open(dir: &Path) -> Result<Topics, TopicError> {
        let root = dir.join("topics");
        let io = |topic: &str| {
            let topic = topic.to_string();
            move |source| TopicError::Io { topic, source }
        };
        std::fs::create_dir_all(&root).map_err(io("*"))?;
        let deleted = dir.join("deleted");
        if deleted.exists() {
            std::fs::remove_dir_all(&deleted).map_err(io("*"))?;
        }
        let mut topics = HashMap::new();
        for entry in std::fs::read_dir(&root).map_err(io("*"))? {
            let entry = entry.map_err(io("*"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let tdir = entry.path();
            let file = tdir.join("topic.json");
            if !file.exists() {
                // Created up to the directory only: never acknowledged.
                std::fs::remove_dir_all(&tdir).map_err(io(&name))?;
                continue;
            }
            let text = std::fs::read_to_string(&file).map_err(io(&name))?;
            let meta: TopicFile = serde_json::from_str(&text).map_err(|e| TopicError::Io {
                topic: name.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", file.display())),
            })?;
            let topic = Self::load(&name, tdir, meta)?;
            topics.insert(name, Arc::new(topic));
        }
        Ok(Topics {
            dir: dir.to_path_buf(),
            topics: RwLock::new(topics),
            appended: watch::channel(0).0,
        })
    }

    fn load(name: &str, dir: PathBuf, meta: TopicFile) -> Result<Topic, TopicError> {
        let log_config = meta.config.log_config();
        let partitions = (0..meta.partitions)
            .map(|p| {
                let log = PartitionLog::open(&dir.join(p.to_string()), log_config.clone()).map_err(|source| {
                    TopicError::Log {
                        topic: name.to_string(),
                        source,
                    }
                })?;
                Ok(Arc::new(Partition {
                    topic: name.to_string(),
                    index: p,
                    log: Mutex::new(log),
                }))
            })
            .collect::<Result<Vec<_>, TopicError>>()?;
        Ok(Topic {
            name: name.to_string(),
            id: meta.id,
            config: meta.config,
            partitions,
            dir,
        })
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    pub fn by_id(&self, id: uuid::Uuid) -> Option<Arc<Topic>> {
        // Fetch and Produce from v13 name topics by id: a scan, unsorted.
        self.topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .find(|t| t.id == id)
            .cloned()
    }

    /// Every topic, sorted by name.
    pub fn all(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Create a topic. `validate_only` checks without creating (CreateTopics' flag).
    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        config: TopicConfig,
        validate_only: bool,
    ) -> Result<Arc<Topic>, TopicError> {
        validate_name(name)?;
        if !(1..=10_000).contains(&partitions) {
            return Err(TopicError::InvalidPartitions {
                topic: name.to_string(),
                count: partitions,
                why: "expected 1 to 10000",
            });
        }
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        if topics.contains_key(name) {
            return Err(TopicError::Exists(name.to_string()));
        }
        let meta = TopicFile {
            id: uuid::Uuid::new_v4(),
            partitions,
            config,
        };
        if validate_only {
            let dir = self.dir.join("topics").join(name);
            return Ok(Arc::new(Topic {
                name: name.into(),
                id: meta.id,
                config: meta.config,
                partitions: vec![],
                dir,
            }));
        }
        let dir = self.dir.join("topics").join(name);
        let io = |source| TopicError::Io {
            topic: name.to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let topic = Self::load(name, dir.clone(), meta)?;
        write_meta(&dir, &topic).map_err(io)?;
        let topic = Arc::new(topic);
        topics.insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    /// Delete a topic and its data.
    pub fn delete(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        let topic = topics
            .remove(name)
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let io = |source| TopicError::Io {
            topic: name.to_string(),
            source,
        };
        let deleted = self.dir.join("deleted");
        std::fs::create_dir_all(&deleted).map_err(io)?;
        let aside = deleted.join(format!("{name}-{}", topic.id));
        std::fs::rename(&topic.dir, &aside).map_err(io)?;
        std::fs::remove_dir_all(&aside).map_err(io)?;
        Ok(topic)
    }

    /// Grow a topic to `count` partitions (CreatePartitions).
    pub fn add_partitions(&self, name: &str, count: i32, validate_only: bool) -> Result<(), TopicError> {
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        let old = topics
            .get(name)
            .cloned()
            .ok_or_else(|| TopicError::Unknown(name.to_string()))?;
        let have = old.partitions.len() as i32;
        if count <= have || count > 10_000 {
            return Err(TopicError::InvalidPartitions {
                topic: name.to_string(),
                count,
                why: if count <= have {
                    "a topic's partitions can only be increased"
                } else {
                    "at most 10000"
                },
            });
        }
        if validate_only {
            return Ok(());
        }
        let log_config = old.config.log_config();
        let mut partitions = old.partitions.clone();
        for p in have..count {
            let log = PartitionLog::open(&old.dir.join(p.to_string()), log_config.clone()).map_err(|source| {
                TopicError::Log {
                    topic: name.to_string(),
                    source,
                }
            })?;
            partitions.push(Arc::new(Partition {
                topic: name.to_string(),
                index: p,
                log: Mutex::new(log),
            }));
        }
        let topic = Topic {
            name: old.name.clone(),
            id: old.id,
            config: old.config.clone(),
            partitions,
            dir: old.dir.clone(),
        };
        write_meta(&topic.dir, &topic).map_err(|source| TopicError::Io {
            topic: name.to_string(),
            source,
        })?;
        topics.insert(name.to_string(), Arc::new(topic));
        Ok(())
    }

    /// Say that data was appended (wakes long-polling fetches).
    pub fn notify_appended(&self) {
        self.appended.send_modify(|n| *n += 1);
    }

    /// A receiver that changes after every append.
    pub fn appended(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// Every partition, for housekeeping (retention, compaction, flush).
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.all().iter().flat_map(|t| t.partitions.iter().cloned()).collect()
    }
}

fn write_meta(dir: &Path, topic: &Topic) -> std::io::Result<()> {
    let meta = TopicFile {
        id: topic.id,
        partitions: topic.partitions.len() as i32,
        config: topic.config.clone(),
    };
    let tmp = dir.join("topic.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&meta).map_err(std::io::Error::other)?)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join("topic.json"))
}

/// Kafka's topic name rules: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    let bad = |why| {
        Err(TopicError::InvalidName {
            name: name.to_string(),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name == "." || name == ".." {
        return bad("`.` and `..` are not allowed");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("only ASCII letters, digits, `.`, `_` and `-` are allowed");
    }
    Ok(())
}
