//! Password file: one user per line, `user:hash` or `user:hash:group1,group2`, where the hash
//! is an argon2 PHC string (`$argon2id$...`) or bcrypt (`$2b$...`, `$2y$...`). Blank lines and
//! `#` comments are ignored. The file is re-read when its modification time changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use async_trait::async_trait;
use parking_lot::Mutex;

use crate::{AuthError, Authenticator, Credentials, Identity};

/// How often at most the file's modification time is checked.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Longest password accepted; longer ones are refused before any hashing work.
const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Debug, Clone)]
struct Entry {
    hash: String,
    groups: Vec<String>,
}

#[derive(Debug, Default)]
struct Loaded {
    users: HashMap<String, Arc<Entry>>,
    modified: Option<SystemTime>,
    checked: Option<Instant>,
}

/// Password checks waiting for a slot, at most, per slot: more are refused at once.
const WAITING_PER_SLOT: usize = 32;

/// Bounds the password checks that run at once: each argon2 check holds about 19 MiB and a
/// core for tens of milliseconds, so unbounded concurrent (wrong) logins would grow memory
/// without limit. Checks beyond the slots wait; beyond a short queue they are refused with
/// UNAVAILABLE.
#[derive(Debug)]
pub struct PasswordChecks {
    slots: tokio::sync::Semaphore,
    waiting: std::sync::atomic::AtomicUsize,
    max_waiting: usize,
}

impl PasswordChecks {
    /// At most `slots` checks at once (at least 1).
    pub fn new(slots: usize) -> Self {
        let slots = slots.max(1);
        PasswordChecks {
            slots: tokio::sync::Semaphore::new(slots),
            waiting: Default::default(),
            max_waiting: slots * WAITING_PER_SLOT,
        }
    }

    /// One slot per core of the machine.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2))
    }

    /// Runs `check` on a blocking thread once a slot is free.
    pub async fn run<T: Send + 'static>(&self, check: impl FnOnce() -> T + Send + 'static) -> Result<T, AuthError> {
        use std::sync::atomic::Ordering;
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(AuthError::Unavailable("too many password checks in progress; retry shortly".into()));
        }
        let permit = self.slots.acquire().await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        let _permit = permit.map_err(|_| AuthError::Unavailable("password checks are shutting down".into()))?;
        tokio::task::spawn_blocking(check)
            .await
            .map_err(|e| AuthError::Unavailable(format!("password check failed: {e}")))
    }

    /// Slots free now.
    pub fn free_slots(&self) -> usize {
        self.slots.available_permits()
    }
}

/// Authenticates Basic credentials against a password file.
#[derive(Debug)]
pub struct PasswordFileAuthenticator {
    path: PathBuf,
    state: Mutex<Loaded>,
    checks: Arc<PasswordChecks>,
}

impl PasswordFileAuthenticator {
    /// Loads `path`; fails with a message naming the file and the bad line.
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, String> {
        let path = path.into();
        let (users, modified) = read_file(&path)?;
        Ok(PasswordFileAuthenticator {
            path,
            state: Mutex::new(Loaded { users, modified, checked: Some(Instant::now()) }),
            checks: Arc::new(PasswordChecks::per_core()),
        })
    }

    /// The same authenticator sharing `checks` (the bound on concurrent password checks).
    pub fn with_checks(mut self, checks: Arc<PasswordChecks>) -> Self {
        self.checks = checks;
        self
    }

    /// Number of users currently loaded.
    pub fn user_count(&self) -> usize {
        self.state.lock().users.len()
    }

    fn lookup(&self, user: &str) -> Option<Arc<Entry>> {
        let mut state = self.state.lock();
        let due = state.checked.is_none_or(|t| t.elapsed() >= RELOAD_CHECK_INTERVAL);
        if due {
            state.checked = Some(Instant::now());
            let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
            if modified != state.modified {
                match read_file(&self.path) {
                    Ok((users, modified)) => {
                        tracing::info!(path = %self.path.display(), users = users.len(), "password file reloaded");
                        state.users = users;
                        state.modified = modified;
                    }
                    // Keep serving the last good file; a half-written file must not lock everyone out.
                    Err(e) => tracing::warn!(error = %e, "password file not reloaded"),
                }
            }
        }
        state.users.get(user).cloned()
    }
}

/// Users by name.
type Users = HashMap<String, Arc<Entry>>;

fn read_file(path: &Path) -> Result<(Users, Option<SystemTime>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Ok((parse(&text).map_err(|e| format!("{}: {e}", path.display()))?, modified))
}

fn parse(text: &str) -> Result<HashMap<String, Arc<Entry>>, String> {
    let mut users = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.splitn(3, ':');
        let user = parts.next().unwrap_or_default().trim();
        let hash = parts.next().unwrap_or_default().trim();
        let groups = parts.next().unwrap_or_default();
        if user.is_empty() || hash.is_empty() {
            return Err(format!("line {}: expected `user:hash[:group,...]`", n + 1));
        }
        if !(hash.starts_with("$argon2") || hash.starts_with("$2")) {
            return Err(format!("line {}: the hash of `{user}` is neither argon2 nor bcrypt", n + 1));
        }
        if hash.starts_with("$argon2") && PasswordHash::new(hash).is_err() {
            return Err(format!("line {}: the argon2 hash of `{user}` is malformed", n + 1));
        }
        let groups = groups.split(',').map(str::trim).filter(|g| !g.is_empty()).map(String::from).collect();
        if users.insert(user.to_string(), Arc::new(Entry { hash: hash.to_string(), groups })).is_some() {
            return Err(format!("line {}: user `{user}` is listed twice", n + 1));
        }
    }
    Ok(users)
}

fn verify(hash: &str, password: &str) -> bool {
    if hash.starts_with("$argon2") {
        PasswordHash::new(hash)
            .map(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
            .unwrap_or(false)
    } else {
        bcrypt::verify(password, hash).unwrap_or(false)
    }
}

/// Hashes `password` as an argon2id PHC string, for writing password files.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let salt = SaltString::encode_b64(&bytes).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// A hash of a password nobody has, verified for unknown users so that an unknown user
/// costs the same time as a wrong password (no user enumeration by timing).
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("quiver-no-such-user").unwrap_or_default())
}

#[async_trait]
impl Authenticator for PasswordFileAuthenticator {
    fn name(&self) -> &'static str {
        "password-file"
    }

    async fn authenticate(&self, credentials: &Credentials) -> Result<Option<Identity>, AuthError> {
        let Credentials::Basic { user, password } = credentials else {
            return Ok(None);
        };
        if user.is_empty() || password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
            return Err(AuthError::InvalidCredentials);
        }
        let entry = self.lookup(user);
        let hash = entry.as_ref().map(|e| e.hash.clone()).unwrap_or_else(|| dummy_hash().to_string());
        let password = password.clone();
        let ok = self.checks.run(move || verify(&hash, &password)).await?;
        match entry {
            Some(entry) if ok => {
                Ok(Some(Identity::new(user.clone(), "password-file").with_groups(entry.groups.clone())))
            }
            _ => Err(AuthError::InvalidCredentials),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> Credentials {
        Credentials::Basic { user: user.into(), password: password.into() }
    }

    fn write(path: &Path, lines: &[(&str, &str, &str)]) {
        let text: String =
            lines.iter().map(|(u, p, g)| format!("{u}:{}:{g}\n", hash_password(p).expect("hash"))).collect();
        std::fs::write(path, format!("# users\n\n{text}")).expect("write");
    }

    #[tokio::test]
    async fn accepts_right_password_and_rejects_wrong_or_unknown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("password.db");
        write(&path, &[("alice", "s3cret", "analysts,eu")]);
        let auth = PasswordFileAuthenticator::load(&path).expect("load");
        let id = auth.authenticate(&basic("alice", "s3cret")).await.expect("ok").expect("identity");
        assert_eq!(id.user, "alice");
        assert_eq!(id.groups, vec!["analysts", "eu"]);
        assert_eq!(auth.authenticate(&basic("alice", "nope")).await, Err(AuthError::InvalidCredentials));
        // Unknown user: the same error as a wrong password.
        assert_eq!(auth.authenticate(&basic("mallory", "s3cret")).await, Err(AuthError::InvalidCredentials));
        assert_eq!(auth.authenticate(&basic("alice", "")).await, Err(AuthError::InvalidCredentials));
        assert_eq!(auth.authenticate(&Credentials::None).await, Ok(None));
    }

    #[tokio::test]
    async fn bcrypt_hashes_are_accepted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("password.db");
        let hash = bcrypt::hash("pw", 4).expect("bcrypt");
        std::fs::write(&path, format!("bob:{hash}\n")).expect("write");
        let auth = PasswordFileAuthenticator::load(&path).expect("load");
        assert!(auth.authenticate(&basic("bob", "pw")).await.expect("ok").is_some());
    }

    #[tokio::test]
    async fn file_is_reread_when_it_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("password.db");
        write(&path, &[("alice", "one", "")]);
        let auth = PasswordFileAuthenticator::load(&path).expect("load");
        assert!(auth.authenticate(&basic("alice", "one")).await.is_ok());
        std::thread::sleep(Duration::from_millis(1100));
        write(&path, &[("alice", "two", ""), ("carol", "three", "")]);
        assert!(auth.authenticate(&basic("alice", "two")).await.is_ok());
        assert!(auth.authenticate(&basic("carol", "three")).await.is_ok());
        assert_eq!(auth.authenticate(&basic("alice", "one")).await, Err(AuthError::InvalidCredentials));
    }

    #[tokio::test]
    async fn concurrent_password_checks_are_bounded_and_the_excess_refused() {
        let checks = Arc::new(PasswordChecks::new(1));
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Arc::new(std::sync::Mutex::new(wait));
        // One check holds the only slot until released.
        let holder = {
            let checks = checks.clone();
            let wait = wait.clone();
            tokio::spawn(
                async move { checks.run(move || wait.lock().map(|w| w.recv().is_ok()).unwrap_or(false)).await },
            )
        };
        while checks.free_slots() != 0 {
            tokio::task::yield_now().await;
        }
        // The queue (32 per slot) fills; the next check is refused at once.
        let mut queued = Vec::new();
        for _ in 0..WAITING_PER_SLOT {
            let checks = checks.clone();
            queued.push(tokio::spawn(async move { checks.run(|| true).await }));
        }
        while checks.waiting.load(std::sync::atomic::Ordering::Acquire) < WAITING_PER_SLOT {
            tokio::task::yield_now().await;
        }
        let refused = checks.run(|| true).await.expect_err("over the queue");
        assert!(matches!(&refused, AuthError::Unavailable(m) if m.contains("too many password checks")), "{refused:?}");
        release.send(()).expect("release");
        assert_eq!(holder.await.expect("join").expect("ran"), true);
        for q in queued {
            assert_eq!(q.await.expect("join").expect("queued checks run"), true);
        }
    }

    #[test]
    fn malformed_files_name_the_line() {
        assert!(parse("alice").expect_err("an error").contains("line 1"));
        assert!(parse("alice:plaintext").expect_err("an error").contains("neither argon2 nor bcrypt"));
        assert!(parse("a:$2b$04$x\na:$2b$04$y").expect_err("an error").contains("listed twice"));
    }
}
