//! The chat room model, with no HTTP in it.
//!
//! A [`Room`] gives each accepted message the next id, keeps the last `--history`
//! messages, and fans every message out to its live [`Subscription`]s. [`Rooms`] is the
//! registry that creates rooms on first use, within `--max-rooms`. Long-poll clients
//! keep a [`ClientQueue`] per (room, client) between their polls.
//!
//! Transports talk to the room only through `publish`, `history_after`, `subscribe`
//! and `client`: that is the seam that lets a new transport be one new file.

mod client_queue;
mod history;
mod message;
mod subscription;

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use client_queue::{ClientQueue, ClientQueues, Superseded};
pub use history::{History, Slice};
pub use message::{Draft, Gap, Published, now_micros, sse_event};
pub use subscription::{Batch, Subscription};

/// The limits the room model enforces.
#[derive(Debug, Clone)]
pub struct RoomLimits {
    pub history: usize,
    pub queue_capacity: usize,
    pub client_idle: Duration,
    pub max_rooms: usize,
    pub max_clients_per_room: usize,
    /// What all rooms' histories together may hold.
    pub max_history_bytes: usize,
}

impl Default for RoomLimits {
    fn default() -> Self {
        RoomLimits {
            history: 10_000,
            queue_capacity: 1024,
            client_idle: Duration::from_secs(60),
            max_rooms: 1000,
            max_clients_per_room: 10_000,
            max_history_bytes: 1 << 30,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoomError {
    #[error("too many rooms: the limit is {0}")]
    TooManyRooms(usize),
    #[error("too many long-poll clients in this room: the limit is {0}")]
    TooManyClients(usize),
}

/// One chat room.
pub struct Room {
    name: Arc<str>,
    // A std Mutex: it is held for a push or a slice copy, never across an await, and
    // publishing under it is what keeps history order and broadcast order the same.
    history: Mutex<History>,
    tx: broadcast::Sender<Arc<Published>>,
    clients: ClientQueues,
    /// Shared by all the rooms of a [`Rooms`].
    store: Arc<Store>,
    /// What transports keep per room: at most one value of each type.
    attachments: Mutex<Vec<Arc<dyn Any + Send + Sync>>>,
}

impl Room {
    fn new(name: &str, limits: &RoomLimits, store: Arc<Store>) -> Self {
        let (tx, _) = broadcast::channel(limits.queue_capacity.max(1));
        Room {
            name: name.into(),
            history: Mutex::new(History::new(limits.history)),
            tx,
            clients: ClientQueues::new(limits.max_clients_per_room, limits.client_idle),
            store,
            attachments: Mutex::new(Vec::new()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Accepts a message: gives it the next id, records it in history, and queues it
    /// for every subscriber. Returns as soon as the message has its id.
    pub fn publish(&self, draft: &Draft) -> Arc<Published> {
        let message = {
            let mut history = self.history.lock().unwrap();
            let id = history.newest() + 1;
            let message = Arc::new(Published::new(id, &self.name, draft, now_micros()));
            let freed = history.push(message.clone());
            let bytes = &self.store.bytes;
            bytes.fetch_add(message.stored_bytes(), Ordering::Relaxed);
            bytes.fetch_sub(freed, Ordering::Relaxed);
            // No receivers is not an error: the message is in history.
            let _ = self.tx.send(message.clone());
            message
        };
        // Once this room's lock is let go: the room to shrink may be this one.
        self.store.keep_within_budget();
        message
    }

    /// The room's newest id (0 before the first message).
    pub fn newest(&self) -> u64 {
        self.history.lock().unwrap().newest()
    }

    /// Up to `limit` held messages after `after`, with a gap if some are gone.
    pub fn history_after(&self, after: u64, limit: usize) -> Slice {
        self.history.lock().unwrap().after(after, limit)
    }

    /// A live reader starting after `after`, or with new messages only when `None`.
    pub fn subscribe(self: &Arc<Self>, after: Option<u64>) -> Subscription {
        let history = self.history.lock().unwrap();
        let rx = self.tx.subscribe();
        Subscription::new(self.clone(), rx, history.newest(), after)
    }

    /// The value of type `T` a transport keeps for this room, made on first use. The
    /// room knows nothing of it; it lives as long as the room.
    pub fn attachment<T: Any + Send + Sync + Default>(&self) -> Arc<T> {
        let mut attachments = self.attachments.lock().unwrap();
        if let Some(found) = attachments
            .iter()
            .find_map(|a| a.clone().downcast::<T>().ok())
        {
            return found;
        }
        let made = Arc::new(T::default());
        attachments.push(made.clone());
        made
    }

    /// The long-poll queue of `client`, made at its first poll.
    pub fn client(self: &Arc<Self>, client: &str) -> Result<Arc<ClientQueue>, RoomError> {
        self.clients.get_or_create(self, client)
    }

    /// What this room's history holds.
    pub fn history_bytes(&self) -> usize {
        self.history.lock().unwrap().bytes()
    }

    /// Lets go of the oldest held messages until `bytes` are freed or none is left.
    fn evict(&self, bytes: usize) -> usize {
        let freed = self.history.lock().unwrap().evict(bytes);
        self.store.bytes.fetch_sub(freed, Ordering::Relaxed);
        freed
    }

    /// How many long-poll clients have a queue here.
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }
}

/// The rooms of one server by name.
type RoomMap = RwLock<HashMap<Arc<str>, Arc<Room>>>;

/// What all rooms' histories hold together, against `--max-history-bytes`.
struct Store {
    bytes: AtomicUsize,
    budget: usize,
    /// The rooms, to find the one holding most (weak: the rooms hold the store).
    rooms: Weak<RoomMap>,
}

impl Store {
    /// While the histories hold more than the budget, the room holding most lets go
    /// of its oldest messages (readers asking for them are told of a gap, as for any
    /// message no longer held). Rooms are evened out from the top: a room filling the
    /// store soon holds most and pays for it, and a room holding less than the others
    /// keeps its history. Run after each publish; it frees a sixty-fourth of that
    /// room's history more than it must, so that a room publishing at the limit does
    /// not look for the largest room every time, and never empties a history for the
    /// sake of it.
    fn keep_within_budget(&self) {
        while self.bytes.load(Ordering::Relaxed) > self.budget {
            let Some(rooms) = self.rooms.upgrade() else {
                return;
            };
            let largest = rooms
                .read()
                .unwrap()
                .values()
                .map(|room| (room.history_bytes(), room))
                .max_by_key(|(bytes, _)| *bytes)
                .map(|(bytes, room)| (bytes, room.clone()));
            let over = self
                .bytes
                .load(Ordering::Relaxed)
                .saturating_sub(self.budget);
            match largest {
                Some((bytes, room)) if room.evict(over + bytes / 64) > 0 => {}
                _ => return,
            }
        }
    }
}

/// Every room of one server, created on first use.
pub struct Rooms {
    rooms: Arc<RoomMap>,
    limits: RoomLimits,
    store: Arc<Store>,
}

impl Rooms {
    pub fn new(limits: RoomLimits) -> Self {
        let rooms = Arc::new(RwLock::new(HashMap::new()));
        let store = Arc::new(Store {
            bytes: AtomicUsize::new(0),
            budget: limits.max_history_bytes,
            rooms: Arc::downgrade(&rooms),
        });
        Rooms {
            rooms,
            limits,
            store,
        }
    }

    /// What all rooms' histories hold.
    pub fn history_bytes(&self) -> usize {
        self.store.bytes.load(Ordering::Relaxed)
    }

    pub fn limits(&self) -> &RoomLimits {
        &self.limits
    }

    /// The room called `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<Room>> {
        self.rooms.read().unwrap().get(name).cloned()
    }

    /// The room called `name`, created if it is new and `--max-rooms` allows.
    ///
    /// Reading a room (a stream, a socket, a long poll) makes it, so that it can be
    /// joined before anyone speaks. At the limit, rooms nobody holds any more and in
    /// which nothing was ever said (a reader's made-up name, gone again) are let go
    /// before a new one is refused: the same empty room is made again if its name
    /// comes back, so nothing is lost, and readers cannot use up `--max-rooms` for
    /// good. A room holds itself through its long-poll queues until they expire.
    pub fn get_or_create(&self, name: &str) -> Result<Arc<Room>, RoomError> {
        if let Some(room) = self.rooms.read().unwrap().get(name) {
            return Ok(room.clone());
        }
        let mut rooms = self.rooms.write().unwrap();
        if let Some(room) = rooms.get(name) {
            return Ok(room.clone());
        }
        if rooms.len() >= self.limits.max_rooms {
            // Under the write lock nobody can take a new hold on a room: a count of
            // one is the map's alone.
            rooms.retain(|_, room| Arc::strong_count(room) > 1 || room.newest() > 0);
        }
        if rooms.len() >= self.limits.max_rooms {
            return Err(RoomError::TooManyRooms(self.limits.max_rooms));
        }
        let room = Arc::new(Room::new(name, &self.limits, self.store.clone()));
        rooms.insert(room.name.clone(), room.clone());
        Ok(room)
    }

    /// Drops long-poll queues idle for longer than `--client-idle-ms`.
    pub fn expire_idle_clients(&self) -> usize {
        let rooms: Vec<Arc<Room>> = self.rooms.read().unwrap().values().cloned().collect();
        rooms.iter().map(|room| room.clients.expire_idle()).sum()
    }

    /// Runs `expire_idle_clients` until `shutdown` is cancelled.
    pub async fn expire_idle_clients_until(&self, shutdown: CancellationToken) {
        let every =
            (self.limits.client_idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => { self.expire_idle_clients(); }
            }
        }
    }
}

#[cfg(test)]
mod tests;
