//! Access-only copies ("mirrors") of a login on this machine: the consumer's credentials files
//! (each agent's `~/.claude/.credentials.json` in its container, say) that hold the owner's
//! current access token and expiry in the provider's own layout with no refresh token, so the
//! CLI reading one uses the token and never refreshes, and can never burn the owner's
//! single-use refresh token. The daemon's one loop writes them at start and right after every
//! look at a login (so within milliseconds of a refresh's save, in both daemon modes),
//! atomically with the configured owner and mode, keeping every other key of the copy.
//!
//! A copy is never a source: nothing here reads a refresh token out of one, and a copy that
//! holds a refresh token of its own (a login of its own), or that is the login's own file, is
//! refused: at start with an error naming it, later (a folder pattern's new match) with an
//! alert, and never written. What to write is decided in [`spec`]; the JSON work is the
//! provider's copy [`Shape`](crate::provider::shape::Shape).

pub mod spec;
pub(crate) mod write;

pub use write::CopyWrite;

use crate::daemon::alert::{Alert, Alerter, Event};
use crate::daemon::metrics::Metrics;
use crate::error::Error;
use crate::keeper::Keeper;
use crate::login::{EpochMs, now_ms};
use crate::provider::Provider;
use crate::provider::shape::Shape;
use crate::storage::atomic::Perms;
use crate::storage::credentials_file::{CredentialsFile, Owner};
use crate::storage::state::{CopiesRecord, CopyRecord, StateDir};
use serde_json::Value;
use spec::{MirrorSpec, OwnerSpec, Verdict};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A folder pattern is looked at again this often, so a new agent's folder gets its copy soon.
pub const PATTERN_POLL: Duration = Duration::from_secs(2);
/// The longest a copy's write waits for the CLI's own save lock: the loop has other work.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// The copies the daemon keeps, by the spec that asked for each.
pub struct Copies {
    bound: Vec<Bound>,
    metrics: Metrics,
    state: StateDir,
    /// What `status` was last told, so the record is written only when it changes.
    recorded: Option<CopiesRecord>,
}

/// One spec, tied to the login it copies.
struct Bound {
    spec: MirrorSpec,
    /// The login's place in the source's list.
    login: usize,
    shape: Shape,
    perms: Perms,
    copies: BTreeMap<PathBuf, Held>,
}

/// What is known of one copy.
#[derive(Clone, Debug, Default)]
struct Held {
    current_at: Option<EpochMs>,
    problem: Option<String>,
    alerted_at: Option<EpochMs>,
}

impl Copies {
    /// No copies.
    pub fn none(metrics: Metrics, state: StateDir) -> Copies {
        Copies {
            bound: Vec::new(),
            metrics,
            state,
            recorded: None,
        }
    }

    /// Ties each spec to the login it names among `logins` and looks at every copy it names
    /// now: a login the daemon does not keep, one without an access-only form, an owner that
    /// does not exist, a copy that is a login's own file or holds a refresh token of its own,
    /// or one that is not JSON, is an error naming it (exit 78), and nothing is written.
    pub fn bind(
        specs: Vec<MirrorSpec>,
        logins: &[&Keeper],
        metrics: Metrics,
        state: StateDir,
    ) -> Result<Copies, Error> {
        let mut copies = Copies::none(metrics, state);
        for spec in specs {
            let refused = |problem: String| Error::MirrorRefused {
                path: PathBuf::from(&spec.path),
                problem,
            };
            let Some(login) = logins
                .iter()
                .position(|k| k.file.owner().provider == spec.login)
            else {
                let kept: Vec<&str> = logins.iter().map(|k| k.file.owner().provider).collect();
                return Err(refused(format!(
                    "(from {}) copies the login `{}`, which this daemon does not keep (it keeps {}); fix `login`",
                    spec.from,
                    spec.login,
                    kept.join(", ")
                )));
            };
            let keeper = logins[login];
            let Some(shape) = keeper.provider.copy_shape().cloned() else {
                return Err(refused(format!(
                    "(from {}) copies the login `{}`, which has no access-only form tokenkeeper knows",
                    spec.from, spec.login
                )));
            };
            let owner = match &spec.owner {
                None => None,
                Some(OwnerSpec::Ids(uid, gid)) => Some((*uid, *gid)),
                Some(OwnerSpec::User(name)) => Some(lookup_user(name).map_err(refused)?),
            };
            let perms = Perms {
                mode: spec.mode,
                owner,
            };
            let targets = expand(&spec.path).map_err(refused)?;
            let mut bound = Bound {
                spec,
                login,
                shape,
                perms,
                copies: BTreeMap::new(),
            };
            for target in targets {
                if let Some(problem) = bound.refusal(&target, logins) {
                    return Err(Error::MirrorRefused {
                        path: target,
                        problem,
                    });
                }
                bound.copies.insert(target, Held::default());
            }
            copies.bound.push(bound);
        }
        Ok(copies)
    }

    /// New specs (a re-read configuration) over the source's logins now; on an error the
    /// copies are the old specs over the new logins (none if those no longer fit).
    pub fn rebind(&mut self, specs: Vec<MirrorSpec>, logins: &[&Keeper]) -> Result<(), Error> {
        let (metrics, state) = (self.metrics.clone(), self.state.clone());
        match Copies::bind(specs, logins, metrics.clone(), state.clone()) {
            Ok(new) => {
                *self = new;
                Ok(())
            }
            Err(e) => {
                let old = self.bound.iter().map(|b| b.spec.clone()).collect();
                *self = Copies::bind(old, logins, metrics.clone(), state.clone())
                    .unwrap_or_else(|_| Copies::none(metrics, state));
                Err(e)
            }
        }
    }

    /// Whether any copy is named by a folder pattern (looked at every [`PATTERN_POLL`]).
    pub fn look_every(&self) -> Option<Duration> {
        self.bound
            .iter()
            .any(|b| spec::is_pattern(&b.spec.path))
            .then_some(PATTERN_POLL)
    }

    /// Brings every copy of login `i` (`keeper`) up to date with its file; called right after
    /// each look at the login. A copy that cannot be written is logged and alerted (once, then
    /// hourly) and tried again at the next look.
    pub fn sync(&mut self, i: usize, keeper: &Keeper, all: &[&Keeper], alerter: &Alerter) {
        if !self.bound.iter().any(|b| b.login == i) {
            return;
        }
        let saved = save_time(keeper);
        let owner = match keeper.file.read() {
            Ok(snap) => snap.doc,
            // The daemon's look at the login says what is wrong with it.
            Err(_) => return,
        };
        let mut lags = Vec::new();
        for b in self.bound.iter_mut().filter(|b| b.login == i) {
            b.expand_again(all);
            let paths: Vec<PathBuf> = b.copies.keys().cloned().collect();
            let results = b.write_all(keeper, all, &paths, &owner);
            for (path, (result, done_at)) in paths.into_iter().zip(results) {
                let now = done_at;
                if result == Ok(true)
                    && let Some(at) = saved
                {
                    lags.push(done_at.saturating_sub(at));
                }
                let login = &b.spec.login;
                let held = b.copies.entry(path.clone()).or_default();
                let shown = path.display().to_string();
                match result {
                    Ok(_) => {
                        if held.problem.take().is_some() {
                            tracing::info!("{login}: the copy at {shown} is written again");
                            if held.alerted_at.take().is_some() {
                                send(
                                    alerter,
                                    Event::Recovered,
                                    login,
                                    now,
                                    format!(
                                        "the copy of the {login} login at {shown} is written again"
                                    ),
                                );
                            }
                        }
                        held.current_at = Some(now);
                        let expiry = copy_expiry(keeper, &path);
                        self.metrics.update_copy(login, &shown, |m| {
                            m.current_at = Some(now);
                            m.access_expiry = expiry.map(|e| e / 1000);
                            m.failing = false;
                        });
                    }
                    Err(problem) => {
                        let message = format!(
                            "the copy of the {login} login at {shown} cannot be written: {problem}"
                        );
                        if held.problem.as_deref() != Some(problem.as_str()) {
                            tracing::warn!("{message}");
                        }
                        held.problem = Some(problem);
                        if spec::alert_due(held.alerted_at, now) {
                            held.alerted_at = Some(now);
                            send(alerter, Event::MirrorFailed, login, now, message);
                        }
                        self.metrics
                            .update_copy(login, &shown, |m| m.failing = true);
                    }
                }
            }
        }
        if !lags.is_empty() {
            let provider = keeper.file.owner().provider;
            let written = lags.len();
            let copies = if written == 1 { "copy" } else { "copies" };
            let (first, last) = (lags.iter().min(), lags.iter().max());
            match (first, last) {
                // The lag between the owner's save (the rename that put the new token in its
                // file) and each copy's rename: while it lasts a consumer may still hold the
                // token the refresh revoked.
                (Some(a), Some(b)) if (0..60_000).contains(b) => tracing::info!(
                    "{provider}: wrote {written} {copies} {a}-{b} ms after its file was saved"
                ),
                _ => tracing::info!("{provider}: wrote {written} {copies}"),
            }
        }
        // A pattern's copy whose folder is gone leaves the metrics with it.
        let bound = &self.bound;
        self.metrics.retain_copies(|login, path| {
            bound
                .iter()
                .any(|b| b.spec.login == login && b.copies.contains_key(Path::new(path)))
        });
        self.record();
    }

    /// Tells `status` which copies there are and how each went, when that changed.
    fn record(&mut self) {
        let record = CopiesRecord {
            pid: std::process::id(),
            copies: self
                .bound
                .iter()
                .flat_map(|b| {
                    b.copies.iter().map(|(path, held)| CopyRecord {
                        login: b.spec.login.clone(),
                        path: path.clone(),
                        problem: held.problem.clone(),
                    })
                })
                .collect(),
        };
        if self.recorded.as_ref() == Some(&record) {
            return;
        }
        if let Err(e) = self.state.write_copies(&record) {
            tracing::debug!("could not write the copies' record: {e}");
        }
        self.recorded = Some(record);
    }
}

/// At most this many copies are written at once (each on a thread of its own, so that the
/// fsyncs of ten copies overlap rather than add up).
const WRITERS: usize = 16;

impl Bound {
    /// Brings each of `paths` up to date with `owner` (the owner's document), all at once;
    /// for each, whether it was written (or why not) and when that was done.
    fn write_all(
        &self,
        keeper: &Keeper,
        all: &[&Keeper],
        paths: &[PathBuf],
        owner: &Value,
    ) -> Vec<(Result<bool, String>, EpochMs)> {
        // A copy holding a login of its own is found by the write's own look at it.
        let refusals: Vec<Option<String>> = paths.iter().map(|p| own_file(p, all)).collect();
        let (provider, who) = (keeper.provider.as_ref(), keeper.file.owner());
        let one = |path: &PathBuf, refused: &Option<String>| {
            let result = match refused {
                Some(problem) => Err(format!("{problem}; tokenkeeper leaves it alone")),
                None => self.write(provider, who, path, owner),
            };
            (result, now_ms())
        };
        let mut out = Vec::with_capacity(paths.len());
        let pairs: Vec<(&PathBuf, &Option<String>)> = paths.iter().zip(&refusals).collect();
        for chunk in pairs.chunks(WRITERS) {
            std::thread::scope(|scope| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|(path, refused)| {
                        std::thread::Builder::new()
                            .name("tokenkeeper-copy".into())
                            .spawn_scoped(scope, || one(path, refused))
                            .map_err(|_| (path, refused))
                    })
                    .collect();
                for handle in handles {
                    out.push(match handle {
                        Ok(h) => h
                            .join()
                            .unwrap_or_else(|_| (Err("its writer failed".into()), now_ms())),
                        // No thread to spare: write it here.
                        Err((path, refused)) => one(path, refused),
                    });
                }
            });
        }
        out
    }

    /// Why `target` can never be a copy of this login, if it cannot: it is a kept login's own
    /// file, it holds a refresh token of its own, or it is not a credentials file.
    fn refusal(&self, target: &Path, all: &[&Keeper]) -> Option<String> {
        if let Some(own) = own_file(target, all) {
            return Some(own);
        }
        let keeper = all[self.login];
        let file = self.file(keeper.provider.as_ref(), keeper.file.owner(), target);
        match file.read() {
            Ok(snap) if !self.shape.refresh_token(&snap.doc).is_empty() => Some(
                "holds a refresh token of its own (a login of its own, not a copy); remove the file, or point the mirror at another, to make it a copy"
                    .to_string(),
            ),
            Ok(_) | Err(Error::Missing { .. }) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// The copy at `target` as a credentials file of this login's provider, never read or
    /// written through a link: its consumer may control the folder, and a link there could
    /// otherwise point the daemon at any file it can read or write.
    fn file(&self, provider: &dyn Provider, who: Owner, target: &Path) -> CredentialsFile {
        CredentialsFile::new(target, who)
            .with_layout(provider.facts().layout)
            .with_keys(provider.doc_keys())
            .with_perms(self.perms)
            .refusing_links()
    }

    /// A folder pattern's matches now: new ones are added (refused ones too, so they are
    /// alerted), those whose folder is gone are dropped.
    fn expand_again(&mut self, all: &[&Keeper]) {
        if !spec::is_pattern(&self.spec.path) {
            return;
        }
        let Ok(now) = expand(&self.spec.path) else {
            return;
        };
        self.copies.retain(|path, _| now.contains(path));
        for path in now {
            if !self.copies.contains_key(&path) {
                tracing::info!(
                    "{}: a new copy at {} (from the pattern {})",
                    all[self.login].file.owner().provider,
                    path.display(),
                    self.spec.path
                );
                self.copies.insert(path, Held::default());
            }
        }
    }

    /// Writes the owner's login (`owner`, its document) into the copy at `target` under the
    /// CLI's own save lock, unless it holds it already. Ok(true) when written.
    fn write(
        &self,
        provider: &dyn Provider,
        who: Owner,
        target: &Path,
        owner: &Value,
    ) -> Result<bool, String> {
        let file = self.file(provider, who, target);
        // A copy that is current, or a login of its own, is not touched (and no lock is made
        // in its folder).
        let decide = |copy: Option<&Value>| {
            // A `[[login]]` may point into a document whose top level is an array: it has no
            // keys to copy, and a copy made of none would hold no token.
            if !owner.is_object() {
                return Err(
                    "the login's own file is not a JSON object at its top level, so it has no keys to copy"
                        .to_string(),
                );
            }
            match spec::verdict(&self.shape, copy, owner) {
            Verdict::Same => Ok(None),
            Verdict::OwnLogin => Err(
                "it holds a refresh token of its own (a login of its own, not a copy); tokenkeeper leaves it alone"
                    .to_string(),
            ),
            Verdict::Write(doc) => Ok(Some(doc)),
        }
        };
        // No folder, no file: the consumer's config folder is theirs to make.
        let folder = file.folder();
        if !folder.is_dir() {
            return Err(format!(
                "its folder {} does not exist; create it (the consumer's config folder)",
                folder.display()
            ));
        }
        let not_writable = |path: PathBuf, source: std::io::Error| Error::Inaccessible {
            action: "write the copy in",
            path,
            source,
            hint: format!("make {} writable by tokenkeeper", folder.display()),
        };
        let write = CopyWrite {
            provider,
            file: &file,
            lock_wait: LOCK_WAIT,
            own: None,
            not_writable: &not_writable,
        };
        write
            .write(|copy| decide(copy).map_err(Problem))
            .map_err(|Problem(why)| why)
    }
}

/// Why a copy was not written, in words for its status and alert.
struct Problem(String);

impl From<Error> for Problem {
    fn from(e: Error) -> Problem {
        Problem(e.to_string())
    }
}

/// The copies a spec names now: its path, or a folder pattern's matches (sorted).
fn expand(path: &str) -> Result<Vec<PathBuf>, String> {
    if !spec::is_pattern(path) {
        return Ok(vec![PathBuf::from(path)]);
    }
    let (pattern, name) = spec::split_pattern(path);
    let found = glob::glob(&pattern)
        .map_err(|e| format!("is not a pattern tokenkeeper can read ({e}); fix `path`"))?;
    let mut out: Vec<PathBuf> = found
        .flatten()
        .filter_map(|p| match &name {
            Some(name) => p.is_dir().then(|| p.join(name)),
            None => p.is_file().then_some(p),
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Why `target` is a kept login's own file, if it is one.
fn own_file(target: &Path, all: &[&Keeper]) -> Option<String> {
    all.iter().find(|k| same_file(target, k.file.path())).map(|k| {
        format!(
            "is the {} login's own file ({}), not a copy of it; a copy is another file (the consumer's), so point the mirror there",
            k.file.owner().provider,
            k.file.path().display()
        )
    })
}

/// Whether two paths name one file (the same inode, through links), or would.
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return (x.dev(), x.ino()) == (y.dev(), y.ino());
        }
    }
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// When the owner's file was last replaced, in ms since the epoch (for the lag figure): its
/// inode's change time, which the rename of a save sets (its mtime is older: the bytes were
/// written before the fsync and the rename).
#[cfg(unix)]
fn save_time(keeper: &Keeper) -> Option<EpochMs> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(keeper.file.path()).ok()?;
    Some(meta.ctime().saturating_mul(1000) + meta.ctime_nsec() / 1_000_000)
}

#[cfg(not(unix))]
fn save_time(keeper: &Keeper) -> Option<EpochMs> {
    let modified = std::fs::metadata(keeper.file.path())
        .ok()?
        .modified()
        .ok()?;
    let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
    EpochMs::try_from(since.as_millis()).ok()
}

/// The expiry the copy at `path` holds now, as the provider reads it.
fn copy_expiry(keeper: &Keeper, path: &Path) -> Option<EpochMs> {
    let file = CredentialsFile::new(path, keeper.file.owner())
        .with_layout(keeper.provider.facts().layout)
        .with_keys(keeper.provider.doc_keys());
    let snap = file.read().ok()?;
    keeper
        .provider
        .parse(&file, &snap.doc)
        .ok()
        .map(|l| l.expires_at)
}

fn send(alerter: &Alerter, event: Event, login: &str, now: EpochMs, message: String) {
    alerter.send(Alert {
        event,
        provider: login.to_string(),
        message,
        at: jiff::Timestamp::from_millisecond(now).unwrap_or_else(|_| jiff::Timestamp::now()),
    });
}

/// A user's uid and primary gid.
#[cfg(unix)]
fn lookup_user(name: &str) -> Result<(u32, u32), String> {
    let missing = || format!("owner \"{name}\" is not a user of this machine; fix `owner`");
    let c_name = std::ffi::CString::new(name).map_err(|_| missing())?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: a zeroed passwd is a valid out-parameter; getpwnam_r writes into it and `buf`,
    // both of which outlive the call, and `result` points to `pwd` or is null.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            c_name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() {
            return Err(missing());
        }
        Ok((pwd.pw_uid, pwd.pw_gid))
    }
}

#[cfg(not(unix))]
fn lookup_user(name: &str) -> Result<(u32, u32), String> {
    Err(format!(
        "owner \"{name}\": setting a copy's owner needs a Unix system; remove `owner`"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_names_existing_folders_and_the_file_to_make_in_each() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for agent in ["a1", "a2"] {
            std::fs::create_dir_all(root.join(agent).join(".claude")).unwrap();
        }
        std::fs::create_dir_all(root.join("a3")).unwrap();
        std::fs::write(root.join("stray"), "").unwrap();
        let pattern = format!("{}/*/.claude/.credentials.json", root.display());
        let found = expand(&pattern).unwrap();
        assert_eq!(
            found,
            vec![
                root.join("a1/.claude/.credentials.json"),
                root.join("a2/.claude/.credentials.json")
            ]
        );
        assert!(expand(&format!("{}/[/x", root.display())).is_err());
    }

    #[test]
    fn a_link_or_a_hard_link_to_a_file_is_that_file() {
        let (dir, real) = crate::testing::temp_file("real.json", "{}");
        let soft = dir.path().join("soft.json");
        let hard = dir.path().join("hard.json");
        std::os::unix::fs::symlink(&real, &soft).unwrap();
        std::fs::hard_link(&real, &hard).unwrap();
        assert!(same_file(&soft, &real));
        assert!(same_file(&hard, &real));
        assert!(same_file(&dir.path().join("./real.json"), &real));
        assert!(!same_file(&dir.path().join("other.json"), &real));
    }

    #[test]
    fn the_current_user_is_found_and_a_made_up_one_is_not() {
        assert!(lookup_user("root").is_ok_and(|(uid, _)| uid == 0));
        let err = lookup_user("no-such-user-tk").unwrap_err();
        assert!(
            err.contains("no-such-user-tk") && err.contains("owner"),
            "{err}"
        );
    }
}
