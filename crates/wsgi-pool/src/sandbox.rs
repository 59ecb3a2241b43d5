//! `wsgi_sandbox`: Linux Landlock rules for every thread that runs Python.
//!
//! Landlock restricts the thread that asks, and everything it starts later
//! (threads and child processes inherit the domain); it never reaches back
//! to the thread that created it. So nginx's own thread keeps its full
//! access (static files, logs, temp files), while the pool threads, the
//! import and exit threads and the watchdog may open only the paths the app
//! needs. What it bounds is the file system (and nothing else): the app
//! still shares nginx's memory, so this stops an app bug from reading
//! `/etc/shadow` or rewriting the site, not a memory-corrupting attacker.
//!
//! The ruleset is built once per worker on nginx's thread
//! ([`install`], after Python has started and knows its own paths); each
//! Python thread then applies a copy of it to itself ([`enter`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use landlock::{
    Access, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreated,
    RulesetCreatedAttr, RulesetStatus, ABI,
};

/// The newest Landlock ABI this module asks for: the kernel's own may be
/// older (the crate then drops the rights it lacks) or newer.
const ABI_WANTED: ABI = ABI::V5;

/// Read-only (and executable) paths every app needs besides Python's own:
/// shared libraries and the loader's cache (C extensions are loaded with
/// `dlopen`), time zones, TLS roots, name resolution, MIME types, `/proc`
/// (`os.cpu_count`, `subprocess` closing descriptors) and the programs in
/// `/usr/bin` (a child process is bound by the same rules).
pub const SYSTEM_READ: &[&str] = &[
    "/usr/lib",
    "/usr/lib64",
    "/lib",
    "/lib64",
    "/usr/local/lib",
    "/etc/ld.so.cache",
    "/usr/bin",
    "/bin",
    "/usr/share/zoneinfo",
    "/etc/localtime",
    "/etc/timezone",
    "/usr/share/ca-certificates",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/host.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/mime.types",
    "/proc",
    "/dev/null",
    "/dev/zero",
    "/dev/urandom",
    "/dev/random",
];

/// Writable besides `wsgi_sandbox_write`: the bit bucket.
pub const SYSTEM_WRITE: &[&str] = &["/dev/null"];

/// What the configuration asks for (`wsgi_sandbox_read`, `wsgi_sandbox_write`).
#[derive(Clone, Debug, Default)]
pub struct SandboxSpec {
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
}

/// Why the sandbox cannot be had.
#[derive(Debug)]
pub enum SandboxError {
    /// The kernel has no Landlock, or it is not enabled (`lsm=` at boot).
    Unsupported(KernelSupport),
    /// Building or applying the ruleset failed.
    Ruleset(String),
    /// Landlock was there but enforced nothing.
    NotEnforced,
    /// `enter` before `install`.
    NotInstalled,
}

impl fmt::Display for SandboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SandboxError::Unsupported(k) => write!(f, "this kernel {k}"),
            SandboxError::Ruleset(e) => write!(f, "cannot build the Landlock ruleset: {e}"),
            SandboxError::NotEnforced => f.write_str("the kernel enforced none of its rules"),
            SandboxError::NotInstalled => f.write_str("no ruleset was prepared for this worker"),
        }
    }
}

/// What the running kernel offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelSupport {
    /// Landlock with this ABI version.
    Available(i32),
    /// Built in, but not enabled (`EOPNOTSUPP`).
    NotEnabled,
    /// Not built in (`ENOSYS`).
    NotImplemented,
}

impl fmt::Display for KernelSupport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelSupport::Available(v) => write!(f, "offers Landlock ABI {v}"),
            KernelSupport::NotEnabled => f.write_str(
                "has Landlock but does not enable it (add \"landlock\" to the lsm= boot parameter)",
            ),
            KernelSupport::NotImplemented => f.write_str(
                "has no Landlock (Linux 5.13 or newer, built with CONFIG_SECURITY_LANDLOCK)",
            ),
        }
    }
}

/// What the kernel lacks for `wsgi_sandbox on` (`None`: Landlock is there):
/// the check `nginx -t` and worker start share.
pub fn missing_kernel() -> Option<KernelSupport> {
    match kernel_support() {
        KernelSupport::Available(_) => None,
        lacking => Some(lacking),
    }
}

/// The running kernel's Landlock, as `landlock_create_ruleset(NULL, 0,
/// LANDLOCK_CREATE_RULESET_VERSION)` reports it. No GIL, no nginx: callable
/// from `nginx -t` and from a worker alike.
pub fn kernel_support() -> KernelSupport {
    #[cfg(feature = "test-hooks")]
    if std::env::var_os("WSGI_TEST_NO_LANDLOCK").is_some() {
        // test builds only (t/wsgi_security.t): a kernel without Landlock
        return KernelSupport::NotImplemented;
    }
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the version query takes no attribute (NULL, size 0) and
    // only returns a number.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v > 0 {
        return KernelSupport::Available(v as i32);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EOPNOTSUPP) => KernelSupport::NotEnabled,
        _ => KernelSupport::NotImplemented,
    }
}

/// The worker's ruleset, built by [`install`]; `None` when `wsgi_sandbox`
/// is off. Guarded by a mutex: Python threads clone it as they start.
static RULESET: OnceLock<Mutex<Option<RulesetCreated>>> = OnceLock::new();

/// The paths the ruleset allows (read, write), for the log's hints. Set
/// once by [`install`], before any Python thread starts; read-only after.
static ALLOWED: OnceLock<(Vec<PathBuf>, Vec<PathBuf>)> = OnceLock::new();

/// The paths the worker's ruleset allows: (read, write); empty when off.
pub fn allowed() -> (Vec<PathBuf>, Vec<PathBuf>) {
    ALLOWED.get().cloned().unwrap_or_default()
}

/// The paths a worker's ruleset allows, for its start-up log line.
pub struct Installed {
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    /// Configured paths that do not exist (left out of the rules).
    pub missing: Vec<PathBuf>,
    pub kernel: KernelSupport,
}

/// Builds the ruleset for this worker: read (and execute) under `read`
/// (the configuration's, Python's own prefixes and `sys.path`, and
/// [`SYSTEM_READ`]), everything under `write`. Called once, on nginx's
/// thread, before any Python thread starts; the sandbox is then on for
/// every thread that calls [`enter`].
pub fn install(spec: &SandboxSpec) -> Result<Installed, SandboxError> {
    let kernel = kernel_support();
    if !matches!(kernel, KernelSupport::Available(_)) {
        return Err(SandboxError::Unsupported(kernel));
    }
    let read_access = AccessFs::from_read(ABI_WANTED);
    let all_access = AccessFs::from_all(ABI_WANTED);
    let mut missing = Vec::new();
    let mut read = Vec::new();
    let mut write = Vec::new();
    let mut ruleset = Ruleset::default()
        .handle_access(all_access)
        .and_then(|r| r.create())
        .map_err(|e| SandboxError::Ruleset(e.to_string()))?;
    let system_read = SYSTEM_READ.iter().map(PathBuf::from);
    let system_write = SYSTEM_WRITE.iter().map(PathBuf::from);
    let wanted = spec
        .read
        .iter()
        .cloned()
        .map(|p| (p, read_access, true))
        .chain(system_read.map(|p| (p, read_access, false)))
        .chain(spec.write.iter().cloned().map(|p| (p, all_access, true)))
        .chain(system_write.map(|p| (p, all_access, false)));
    for (path, access, configured) in wanted {
        let fd = match PathFd::new(&path) {
            Ok(fd) => fd,
            Err(_) => {
                // a system path this distribution lacks is fine; a
                // configured one is reported
                if configured && !missing.contains(&path) {
                    missing.push(path);
                }
                continue;
            }
        };
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| SandboxError::Ruleset(format!("{}: {e}", path.display())))?;
        let list = if access == read_access {
            &mut read
        } else {
            &mut write
        };
        if !list.contains(&path) {
            list.push(path);
        }
    }
    let slot = RULESET.get_or_init(|| Mutex::new(None));
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(ruleset);
    let _ = ALLOWED.set((read.clone(), write.clone()));
    Ok(Installed {
        read,
        write,
        missing,
        kernel,
    })
}

/// Whether [`install`] ran for this worker (the sandbox is on).
pub fn is_on() -> bool {
    RULESET
        .get()
        .is_some_and(|m| m.lock().unwrap_or_else(|e| e.into_inner()).is_some())
}

/// Restricts the calling thread (and all it starts later) to the worker's
/// ruleset. A no-op when the sandbox is off. Every thread that runs Python
/// calls it first; on an error it must run no Python.
pub fn enter() -> Result<(), SandboxError> {
    let Some(slot) = RULESET.get() else {
        return Ok(());
    };
    let ruleset = {
        let guard = slot.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            None => return Ok(()),
            Some(r) => r
                .try_clone()
                .map_err(|e| SandboxError::Ruleset(e.to_string()))?,
        }
    };
    let status = ruleset
        .restrict_self()
        .map_err(|e| SandboxError::Ruleset(e.to_string()))?;
    match status.ruleset {
        RulesetStatus::FullyEnforced | RulesetStatus::PartiallyEnforced => Ok(()),
        RulesetStatus::NotEnforced => Err(SandboxError::NotEnforced),
    }
}

/// Whether `path` lies under one of `roots` (for the log's hint on a
/// denied path).
pub fn under_any(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|r| path.starts_with(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_any_compares_whole_components() {
        let roots = vec![PathBuf::from("/srv/app")];
        assert!(under_any(Path::new("/srv/app/x.py"), &roots));
        assert!(under_any(Path::new("/srv/app"), &roots));
        assert!(!under_any(Path::new("/srv/application"), &roots));
        assert!(!under_any(Path::new("/etc/passwd"), &roots));
    }

    #[test]
    fn kernel_support_is_described_with_the_remedy() {
        assert!(KernelSupport::NotEnabled.to_string().contains("lsm="));
        assert!(KernelSupport::NotImplemented.to_string().contains("5.13"));
        assert_eq!(
            KernelSupport::Available(7).to_string(),
            "offers Landlock ABI 7"
        );
    }

    /// On a thread of its own (Landlock never reaches back): after `enter`
    /// the thread reads what the rules allow and nothing else, and a thread
    /// it starts is bound too, while this test's thread is not.
    #[test]
    fn a_thread_that_enters_reads_only_what_is_allowed() {
        if !matches!(kernel_support(), KernelSupport::Available(_)) {
            eprintln!("skipped: {}", kernel_support());
            return;
        }
        let dir = std::env::temp_dir().join(format!("wsgi-sandbox-test-{}", std::process::id()));
        let allowed = dir.join("allowed");
        let denied = dir.join("denied");
        std::fs::create_dir_all(&allowed).unwrap();
        std::fs::create_dir_all(&denied).unwrap();
        std::fs::write(allowed.join("a"), b"a").unwrap();
        std::fs::write(denied.join("d"), b"d").unwrap();
        let installed = install(&SandboxSpec {
            read: vec![allowed.clone(), dir.join("nonexistent")],
            write: vec![],
        })
        .unwrap();
        assert_eq!(installed.missing, vec![dir.join("nonexistent")]);
        let (a, d, child_d) = std::thread::spawn(move || {
            enter().unwrap();
            let a = std::fs::read(allowed.join("a")).is_ok();
            let d = std::fs::read(denied.join("d")).map_err(|e| e.kind());
            let child_d = std::thread::spawn(move || std::fs::read(denied.join("d")).is_ok())
                .join()
                .unwrap();
            (a, d, child_d)
        })
        .join()
        .unwrap();
        // this thread never entered
        let here = std::fs::read(dir.join("denied/d")).is_ok();
        *RULESET.get().unwrap().lock().unwrap() = None;
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(a, "an allowed path is readable");
        assert_eq!(d, Err(std::io::ErrorKind::PermissionDenied));
        assert!(!child_d, "a thread started inside is bound too");
        assert!(here, "the thread that built the ruleset is not");
    }
}
