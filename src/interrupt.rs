//! Ctrl-C and SIGTERM: the held locks and this process's temporary files are
//! removed, "interrupted" is said, and the process exits 130; or, while a
//! command has registered an action instead (the mount: unmount), that
//! action runs and the command ends its own way.
//!
//! No work is done in a signal handler: `main` blocks both signals before
//! any thread starts (every later thread inherits the mask), and one thread
//! waits for them with `sigwait` and then cleans up as ordinary code.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use crate::backend::{Backend, Kind};

/// The exit code after SIGINT or SIGTERM (128 + SIGINT, as shells report).
pub const EXIT_INTERRUPTED: i32 = 130;

struct Held {
    token: u64,
    backend: Arc<dyn Backend>,
    /// The name of the lock object, which its refresher replaces while it
    /// holds this mutex.
    lock: Arc<Mutex<String>>,
}

static HELD: Mutex<Vec<Held>> = Mutex::new(Vec::new());
type Action = Box<dyn FnOnce() + Send>;
static ON_SIGNAL: Mutex<Option<Action>> = Mutex::new(None);
static NEXT: AtomicU64 = AtomicU64::new(0);
/// Read while a temporary file is created; taken for good on interruption,
/// before this process's temporaries are removed, so that none is created
/// after (the threads storing packs go on until the process exits).
static TEMPORARIES: RwLock<()> = RwLock::new(());

/// Held while creating a temporary file: an interruption waits for the
/// creation, and after it none is created.
pub fn creating_temporary() -> RwLockReadGuard<'static, ()> {
    TEMPORARIES.read().unwrap_or_else(|e| e.into_inner())
}

/// Registers a held lock, to be removed if the process is interrupted;
/// returns the token that [`release`] takes.
pub fn hold(backend: Arc<dyn Backend>, lock: Arc<Mutex<String>>) -> u64 {
    let token = NEXT.fetch_add(1, Ordering::Relaxed);
    HELD.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Held { token, backend, lock });
    token
}

/// Forgets a lock that its holder removes itself.
pub fn release(token: u64) {
    HELD.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|h| h.token != token);
}

/// Registers what the first SIGINT or SIGTERM does in place of exiting
/// (a second one exits as usual).
pub fn on_signal(action: Action) {
    *ON_SIGNAL.lock().unwrap_or_else(|e| e.into_inner()) = Some(action);
}

/// Blocks SIGINT and SIGTERM and starts the thread that waits for them.
/// Must run before any other thread starts, so that none of them takes
/// the signals with the default (killing) action.
pub fn install() {
    // SAFETY: a zeroed sigset_t is a valid argument for sigemptyset, and
    // the set is only passed by pointer to the libc calls that fill and
    // read it.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return;
        }
        set
    };
    let started = std::thread::Builder::new().name("signals".into()).spawn(move || {
        loop {
            let mut sig = 0;
            // SAFETY: `set` is an initialised signal set, `sig` a valid
            // place for the result.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                let action = ON_SIGNAL.lock().unwrap_or_else(|e| e.into_inner()).take();
                match action {
                    Some(action) => action(),
                    None => interrupted(),
                }
            }
        }
    });
    if started.is_err() {
        // Without the waiting thread, let the signals kill as before.
        // SAFETY: as above.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    }
}

fn interrupted() -> ! {
    eprintln!("strongroom: interrupted");
    let _no_more_temporaries = TEMPORARIES.write().unwrap_or_else(|e| e.into_inner());
    let held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    // The lock names stay locked until the process ends, so no refresher
    // can put a new lock object in place of the one removed here.
    let mut names = Vec::new();
    for h in held.iter() {
        let name = h.lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = h.backend.delete(Kind::Locks, &name) {
            crate::warn(&format!("removing lock {} failed: {e:#}", *name));
        }
        h.backend.remove_own_temporaries();
        names.push(name);
    }
    std::process::exit(EXIT_INTERRUPTED)
}
