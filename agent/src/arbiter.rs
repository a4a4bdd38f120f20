//! The arbiter: the one owner of the table of watchers (add, remove, look up).
//!
//! It only hands out [`WatcherHandle`]s; commands then talk to each watcher directly, so a
//! slow stop of one watcher never blocks another.

use crate::events::EventSender;
use crate::watcher::{self, WatcherHandle};
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tokio::sync::{mpsc, oneshot};
use troupe::config::WatcherConfig;
use troupe::protocol::{CommandError, Event};

enum ArbiterMsg {
    Add {
        config: Box<WatcherConfig>,
        reply: oneshot::Sender<Result<WatcherHandle, CommandError>>,
    },
    Remove {
        name: String,
        reply: oneshot::Sender<Option<WatcherHandle>>,
    },
    Get {
        name: String,
        reply: oneshot::Sender<Option<WatcherHandle>>,
    },
    All {
        reply: oneshot::Sender<Vec<WatcherHandle>>,
    },
}

/// A cheap, cloneable reference to the arbiter actor.
#[derive(Clone)]
pub struct ArbiterHandle {
    tx: mpsc::Sender<ArbiterMsg>,
}

impl ArbiterHandle {
    /// Spawns the actor; `state_dir` is the agent's, handed to every watcher.
    pub fn spawn(events: EventSender, state_dir: PathBuf) -> Self {
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(run(rx, events, state_dir));
        Self { tx }
    }

    /// Adds a stopped watcher; names are unique ignoring case.
    pub async fn add(&self, config: WatcherConfig) -> Result<WatcherHandle, CommandError> {
        self.ask(|reply| ArbiterMsg::Add {
            config: Box::new(config),
            reply,
        })
        .await?
    }

    /// Takes a watcher out of the table; the caller shuts it down.
    pub async fn remove(&self, name: &str) -> Result<Option<WatcherHandle>, CommandError> {
        let name = name.to_string();
        self.ask(|reply| ArbiterMsg::Remove { name, reply }).await
    }

    pub async fn get(&self, name: &str) -> Result<Option<WatcherHandle>, CommandError> {
        let name = name.to_string();
        self.ask(|reply| ArbiterMsg::Get { name, reply }).await
    }

    /// Every watcher, sorted by lower-cased name.
    pub async fn all(&self) -> Result<Vec<WatcherHandle>, CommandError> {
        self.ask(|reply| ArbiterMsg::All { reply }).await
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> ArbiterMsg,
    ) -> Result<T, CommandError> {
        let (reply, rx) = oneshot::channel();
        let gone = || {
            CommandError::new(
                troupe::protocol::Errno::BadMsgDataError,
                "agent is shutting down",
            )
        };
        self.tx.send(make(reply)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }
}

async fn run(mut rx: mpsc::Receiver<ArbiterMsg>, events: EventSender, state_dir: PathBuf) {
    // Keyed by lower-cased name: Circus looks watchers up case-insensitively.
    let mut watchers: BTreeMap<String, WatcherHandle> = BTreeMap::new();
    while let Some(msg) = rx.recv().await {
        match msg {
            ArbiterMsg::Add { config, reply } => {
                let name = config.name.clone();
                let result = match watchers.entry(name.to_lowercase()) {
                    Entry::Occupied(_) => {
                        Err(CommandError::command(format!("'{name}' already exist")))
                    }
                    Entry::Vacant(slot) => {
                        watcher::spawn(*config, events.clone(), state_dir.clone()).inspect(
                            |handle| {
                                slot.insert(handle.clone());
                                events.emit(&name, Event::Add);
                            },
                        )
                    }
                };
                let _ = reply.send(result);
            }
            ArbiterMsg::Remove { name, reply } => {
                let removed = watchers.remove(&name.to_lowercase());
                if let Some(handle) = &removed {
                    events.emit(&handle.name, Event::Remove);
                }
                let _ = reply.send(removed);
            }
            ArbiterMsg::Get { name, reply } => {
                let _ = reply.send(watchers.get(&name.to_lowercase()).cloned());
            }
            ArbiterMsg::All { reply } => {
                let _ = reply.send(watchers.values().cloned().collect());
            }
        }
    }
}
