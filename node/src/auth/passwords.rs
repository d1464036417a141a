//! Password hashing: argon2id with the OWASP parameters (19 MiB, t=2, p=1), run on a
//! small pool of dedicated threads in the idle scheduling class, fed by a bounded queue. A login storm
//! therefore uses at most `threads` cores, never the async runtime's, and past the queue
//! bound it is refused (503) instead of piling up. Unknown users are verified against a
//! dummy hash, so they cost the same as a wrong password.

use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::time::Instant;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::oneshot;

/// OWASP's argon2id recommendation: 19 MiB of memory, 2 passes, 1 lane.
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
const LANES: u32 = 1;

/// The fallback priority of hashing threads where `SCHED_IDLE` is refused.
const LOWEST_NICENESS: libc::c_int = 19;

/// Why a hash could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing is saturated; retry shortly")]
    Busy,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

enum Job {
    Hash {
        password: String,
        reply: oneshot::Sender<Result<String, HashError>>,
    },
    Verify {
        password: String,
        phc: Option<String>,
        reply: oneshot::Sender<Result<bool, HashError>>,
    },
}

/// The hashing pool. Cloning shares it.
#[derive(Clone)]
pub struct PasswordHasher {
    queue: SyncSender<Job>,
    /// A real argon2id hash of a random password: what unknown users are checked against.
    dummy: Arc<String>,
}

/// The argon2id instance with the OWASP parameters, shared with the bench so its
/// raw-hash baseline measures exactly what logins do.
pub fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None).expect("OWASP parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The number of hashing threads for a setting of 0: half the cores, at least one.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() / 2)
        .unwrap_or(1)
        .max(1)
}

impl PasswordHasher {
    /// Starts `threads` hashing threads (0 = [`default_threads`]) behind a queue of
    /// `queue` waiting jobs.
    pub fn start(threads: usize, queue: usize) -> Self {
        let threads = if threads == 0 {
            default_threads()
        } else {
            threads
        };
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("password-hash-{i}"))
                .spawn(move || {
                    lower_this_threads_priority();
                    pin_to_last_cores(threads);
                    loop {
                        let job = match rx.lock().expect("queue lock").recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        };
                        run(job);
                    }
                })
                .expect("spawn a password hashing thread");
        }
        let dummy = argon2()
            .hash_password(&rand::random::<[u8; 16]>())
            .expect("hashing random bytes cannot fail")
            .to_string();
        Self {
            queue: tx,
            dummy: Arc::new(dummy),
        }
    }

    /// Hashes a new password into a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`).
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Hash { password, reply })?;
        answer
            .await
            .map_err(|_| HashError::Failed("hashing thread stopped".into()))?
    }

    /// Checks a password against a stored hash; with no stored hash (unknown user) it
    /// checks against the dummy hash and answers false, spending the same time.
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, HashError> {
        let known = stored.is_some();
        let phc = Some(stored.unwrap_or_else(|| self.dummy.as_ref().clone()));
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Verify {
            password,
            phc,
            reply,
        })?;
        let matched = answer
            .await
            .map_err(|_| HashError::Failed("hashing thread stopped".into()))??;
        Ok(matched && known)
    }

    fn submit(&self, job: Job) -> Result<(), HashError> {
        match self.queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                metrics::counter!("strata_password_hash_rejected_total").increment(1);
                Err(HashError::Busy)
            }
            Err(TrySendError::Disconnected(_)) => {
                Err(HashError::Failed("hashing pool stopped".into()))
            }
        }
    }
}

fn run(job: Job) {
    let start = Instant::now();
    let op = match job {
        Job::Hash { password, reply } => {
            let result = argon2()
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| HashError::Failed(e.to_string()));
            let _ = reply.send(result);
            "hash"
        }
        Job::Verify {
            password,
            phc,
            reply,
        } => {
            let result = match phc.as_deref().map(PasswordHash::new) {
                Some(Ok(parsed)) => Ok(argon2()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()),
                Some(Err(e)) => Err(HashError::Failed(format!("stored hash is malformed: {e}"))),
                None => Ok(false),
            };
            let _ = reply.send(result);
            "verify"
        }
    };
    metrics::histogram!("strata_password_hash_duration_seconds", "op" => op)
        .record(start.elapsed().as_secs_f64());
}

/// Puts this thread in the `SCHED_IDLE` class: it runs only when no other thread wants
/// the CPU, and any request-serving thread that wakes up preempts it at once. A login
/// storm then soaks up idle CPU instead of slowing everything else. Where the class is
/// refused, the thread runs at nice 19 instead.
fn lower_this_threads_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler(0, ...) targets the calling thread and only reads the
    // parameter; gettid and setpriority have no memory-safety preconditions. Failure
    // leaves the thread at normal priority.
    unsafe {
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, LOWEST_NICENESS);
        }
    }
}

/// Pins this thread to the last `count` cores. Argon2id walks 19 MiB per hash, which
/// evicts every cache it runs beside; kept on the last cores, it leaves the first cores'
/// caches to request handling. Best effort: a refused mask leaves the thread unpinned.
fn pin_to_last_cores(count: usize) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if cores < 2 {
        return;
    }
    // SAFETY: the set is a plain bitmask initialised by CPU_ZERO; sched_setaffinity(0, ..)
    // targets the calling thread and only reads the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for cpu in cores.saturating_sub(count.max(1))..cores {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let hasher = PasswordHasher::start(1, 4);
        let phc = hasher.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(
            hasher
                .verify("correct horse".into(), Some(phc.clone()))
                .await
                .unwrap()
        );
        assert!(
            !hasher
                .verify("wrong horse".into(), Some(phc))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn unknown_users_are_checked_against_the_dummy_and_fail() {
        let hasher = PasswordHasher::start(1, 4);
        assert!(!hasher.verify("anything".into(), None).await.unwrap());
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_rather_than_waited_on() {
        let hasher = PasswordHasher::start(1, 1);
        let jobs: Vec<_> = (0..8)
            .map(|i| hasher.hash(format!("password-{i}")))
            .collect();
        // join_all polls every future at once, so all eight are submitted together.
        let results = futures::future::join_all(jobs).await;
        assert!(
            results.iter().any(|r| matches!(r, Err(HashError::Busy))),
            "some were refused"
        );
        assert!(results.iter().any(|r| r.is_ok()), "some were hashed");
    }
}
