//! Knowing that every node has applied an invalidation before the change behind it is
//! acknowledged. Each node answers every invalidation it applied with an ack on the
//! channel; the node that published waits for the acks of every peer it heard lately
//! (its heartbeats), or, failing that, until a peer that did not answer must have
//! stopped trusting its caches (see [`super::ACK_DEADLINE`]).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Peers heard lately, and the invalidations this node waits on.
#[derive(Default)]
pub struct Acks {
    /// When each node (this one included) was last heard on the channel.
    peers: Mutex<HashMap<String, Instant>>,
    waiters: Mutex<HashMap<u64, Waiter>>,
    next_nonce: AtomicU64,
}

struct Waiter {
    /// Nodes whose ack has not come yet.
    pending: HashSet<String>,
    done: Option<oneshot::Sender<()>>,
}

/// One invalidation waiting for its acks: its nonce and what completes when they came.
pub struct Expected {
    pub nonce: u64,
    pub all_acked: oneshot::Receiver<()>,
}

impl Acks {
    /// Records that `node` was heard now.
    pub fn seen(&self, node: &str) {
        let mut peers = self.peers.lock().expect("peers lock");
        match peers.get_mut(node) {
            Some(at) => *at = Instant::now(),
            None => {
                peers.insert(node.to_owned(), Instant::now());
            }
        }
    }

    /// Registers an invalidation about to be published, expecting an ack from every node
    /// heard within `window` (complete at once when there is none).
    pub fn expect(&self, window: Duration) -> Expected {
        let nonce = self.next_nonce.fetch_add(1, Ordering::Relaxed);
        let pending: HashSet<String> = {
            let mut peers = self.peers.lock().expect("peers lock");
            peers.retain(|_, at| at.elapsed() < window * 10);
            peers
                .iter()
                .filter(|(_, at)| at.elapsed() < window)
                .map(|(node, _)| node.clone())
                .collect()
        };
        let (done, all_acked) = oneshot::channel();
        if pending.is_empty() {
            let _ = done.send(());
        } else {
            self.waiters.lock().expect("waiters lock").insert(
                nonce,
                Waiter {
                    pending,
                    done: Some(done),
                },
            );
        }
        Expected { nonce, all_acked }
    }

    /// Records `node`'s ack of invalidation `nonce`.
    pub fn acked(&self, nonce: u64, node: &str) {
        let mut waiters = self.waiters.lock().expect("waiters lock");
        if let Some(waiter) = waiters.get_mut(&nonce) {
            waiter.pending.remove(node);
            if waiter.pending.is_empty()
                && let Some(done) = waiter.done.take()
            {
                let _ = done.send(());
            }
        }
    }

    /// Stops waiting on invalidation `nonce`.
    pub fn forget(&self, nonce: u64) {
        self.waiters.lock().expect("waiters lock").remove(&nonce);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    #[test]
    fn an_invalidation_completes_once_every_peer_heard_lately_acked_it() {
        let acks = Acks::default();
        acks.seen("node-1");
        acks.seen("node-2");
        let mut expected = acks.expect(WINDOW);
        acks.acked(expected.nonce, "node-1");
        assert!(
            expected.all_acked.try_recv().is_err(),
            "node-2 has not acked"
        );
        acks.acked(expected.nonce + 1, "node-2");
        assert!(
            expected.all_acked.try_recv().is_err(),
            "another invalidation's ack"
        );
        acks.acked(expected.nonce, "node-2");
        assert!(expected.all_acked.try_recv().is_ok());
        acks.forget(expected.nonce);
    }

    #[test]
    fn peers_not_heard_within_the_window_are_not_waited_for() {
        let acks = Acks::default();
        let mut nobody = acks.expect(WINDOW);
        assert!(
            nobody.all_acked.try_recv().is_ok(),
            "no peer: nothing to wait for"
        );
        acks.seen("node-1");
        std::thread::sleep(Duration::from_millis(20));
        let mut stale = acks.expect(Duration::from_millis(10));
        assert!(
            stale.all_acked.try_recv().is_ok(),
            "node-1 was heard too long ago"
        );
    }
}
