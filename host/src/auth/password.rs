//! Password hashing with argon2id, always in a blocking thread (it takes tens of
//! milliseconds by design and must not stall the async runtime).

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

pub async fn hash(password: String) -> Result<String, String> {
    tokio::task::spawn_blocking(move || hash_now(&password))
        .await
        .map_err(|e| e.to_string())?
}

/// Checks `password` against `stored` (or against a decoy when there is no user).
pub async fn verify(password: String, stored: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
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
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn hashes_verify_and_differ() {
        let a = super::hash("correct horse".into()).await.unwrap();
        let b = super::hash("correct horse".into()).await.unwrap();
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$"));
        assert!(super::verify("correct horse".into(), Some(a.clone())).await);
        assert!(!super::verify("wrong".into(), Some(a)).await);
        assert!(!super::verify("anything".into(), None).await);
    }
}
