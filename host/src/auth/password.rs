//! Password hashing with argon2id, always in a blocking thread (it takes tens of
//! milliseconds and 19 MiB by design and must not stall the async runtime). At most
//! [`hash_slots`] hashes run at once, so a flood of logins or registrations leaves a core for
//! database reads and heartbeats; a caller that cannot get a slot soon is told to come back.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;

/// A hash of a random password, made once, verified against when the username does not exist,
/// so a login takes as long for unknown users as for known ones.
static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn hash_now(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Keeps argon2's 19 MiB working memory from staying resident after each hash: glibc raises its
/// mmap threshold after the first large free, so later hashes would come from (and stay in)
/// the heap arenas of the blocking threads. A fixed threshold keeps large blocks mmapped and
/// returned to the kernel when freed. Call once at start.
pub fn keep_hash_memory_transient() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator tuning; called before other threads hash.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("The host is busy checking passwords; try again in a few seconds")]
    Busy,
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// Longest a caller waits for a hashing slot before getting [`HashError::Busy`].
const SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Hashes that may run at once: all cores but one (at least one).
pub fn hash_slots() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().saturating_sub(1))
        .unwrap_or(1)
        .max(1)
}

static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();

/// Runs one hashing job in a blocking thread once a slot is free.
async fn with_slot<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, HashError> {
    let slots = SLOTS.get_or_init(|| tokio::sync::Semaphore::new(hash_slots()));
    let _permit = tokio::time::timeout(SLOT_WAIT, slots.acquire())
        .await
        .map_err(|_| HashError::Busy)?
        .map_err(|_| HashError::Busy)?;
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| HashError::Failed(e.to_string()))
}

pub async fn hash(password: String) -> Result<String, HashError> {
    with_slot(move || hash_now(&password))
        .await?
        .map_err(HashError::Failed)
}

/// Checks `password` against `stored` (or against a decoy when there is no user).
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, HashError> {
    with_slot(move || {
        let real = stored.is_some();
        let text = stored.unwrap_or_else(|| {
            DECOY
                .get_or_init(|| hash_now(&super::secrets::generate()).unwrap_or_default())
                .clone()
        });
        let ok = PasswordHash::new(&text)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        real && ok
    })
    .await
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn hashes_verify_and_differ() {
        let a = super::hash("correct horse".into()).await.unwrap();
        let b = super::hash("correct horse".into()).await.unwrap();
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$"));
        assert!(super::verify("correct horse".into(), Some(a.clone()))
            .await
            .unwrap());
        assert!(!super::verify("wrong".into(), Some(a)).await.unwrap());
        assert!(!super::verify("anything".into(), None).await.unwrap());
    }
}
