//! Runs untrusted Python — model completions together with their unit tests — to score HumanEval
//! and MBPP.
//!
//! Every run is a fresh `python3 -I -B -u program.py` subprocess in its own session and process
//! group, with a cleared environment (`PATH`, `HOME`, `TMPDIR`, `LANG` only; `HOME` and `TMPDIR`
//! point at the run's work dir), `stdin` from `/dev/null`, and the rlimits of [`Limits`]. What
//! contains each kind of misbehaviour, and how that depends on the privileges we run with
//! (see [`isolation`] for what is active on this machine):
//!
//! * **Endless loops.** A wall-clock deadline after which the whole process group is sent SIGKILL
//!   ([`Status::Timeout`]); `RLIMIT_CPU` as a second bound ([`Status::CpuTimeExceeded`]) for a
//!   process that burns CPU faster than the clock runs (several threads). An endless loop always
//!   reports `Timeout`: see [`Limits::cpu_seconds`].
//! * **Fork bombs.** `RLIMIT_NPROC`. The kernel never enforces it for uid 0, so when we are root
//!   each run is given its own unused uid/gid (`setresuid` in the child before exec, which also
//!   clears every capability; supplementary groups are dropped), and the limit then counts exactly
//!   that run's processes. As a non-root user the limit is enforced but counts *all* of the user's
//!   processes, so a run may fork less than [`Limits::processes`] allows.
//! * **Stray processes.** After the run the process group is killed. As root, the run's private uid
//!   is also swept: a helper that has become that uid sends `kill(-1, SIGKILL)`, which reaches every
//!   process of the run, including ones that left the group with `setsid`. *Limitation:* as
//!   non-root there is no sweep, so a process that escaped the group with `setsid` survives.
//! * **Memory.** `RLIMIT_AS` per process (Python raises `MemoryError`, reported as
//!   [`Status::MemoryExceeded`]). The bound for a whole run is `processes × memory_bytes`, as there
//!   is no cgroup here.
//! * **Writes outside the work dir.** Landlock (Linux ≥ 5.13, unprivileged, works as root too):
//!   every write-type filesystem access — creating, writing, truncating, removing, renaming,
//!   linking — is denied except beneath the work dir (and writing `/dev/null`). Landlock is
//!   inherited by children and survives `exec`, so `os.system("echo > $TMPDIR/x")` is contained too.
//!   With Landlock ABI ≥ 4 TCP `bind`/`connect` are denied; with ABI ≥ 6 signals to processes
//!   outside the sandbox and abstract unix sockets are blocked. As root the private uid adds
//!   ordinary permission checks on top. *Limitation:* where the kernel lacks Landlock the only
//!   write containment is a Python audit hook ([`FALLBACK_GUARD`]) that refuses writes outside the
//!   work dir and refuses `ctypes`, `os.system`, `exec*`, `posix_spawn` and `subprocess`. That is
//!   Python-level only and can be bypassed by determined code; it is a fallback, not a boundary.
//! * **Signals to processes outside the run** (`os.kill(os.getppid(), 9)` at the trainer,
//!   `os.kill(-1, 9)` at every process of the user). As root the private uid may signal no one
//!   else's processes; with Landlock ABI ≥ 6 its signal scope blocks them for any user.
//!   *Limitation:* as non-root on a kernel with Landlock ABI < 6 only the [`FALLBACK_GUARD`] stands
//!   in the way (it is then installed with or without Landlock): it refuses `os.kill` and
//!   `os.killpg` outside the run's process group and `fcntl`/`ioctl` signal owners, removes
//!   `signal.pidfd_send_signal` (which has no audit event), and refuses subprocesses, `exec` and
//!   `ctypes`, which could send signals through a `kill` command or libc. Python-level only, as
//!   above: native code gets past it.
//! * **Disk filling.** `RLIMIT_FSIZE` per file (Python ignores SIGXFSZ, so the write fails with
//!   `EFBIG`). As root with `CAP_SYS_ADMIN` the work dir is additionally a private, size-capped
//!   tmpfs ([`Limits::disk_bytes`]) in a private mount namespace. *Limitation:* otherwise the number
//!   of files is unbounded, so total disk use is bounded only by what fits in the time limits.
//! * **Faking a pass.** `sys.exit(0)` or `os._exit(0)` before the tests ran must not score as a
//!   pass, so a statement that prints a random per-run marker is appended to every program, and a
//!   run only passes if it exited 0 *and* printed the marker ([`Status::ExitedEarly`] otherwise).
//!   *Limitation:* code that digs the marker out of its program file or code object could still
//!   fake it.
//! * **Reads** are not restricted (the interpreter needs its stdlib): as root the private uid sees
//!   only world-readable files; as non-root a run can read whatever the user can.
//!
//! Linux only (Landlock, `/proc`, `pidfd`); the module is compiled out elsewhere.
//! The interpreter is the first `python3` on the sandbox's own minimal `PATH`
//! (`/usr/local/bin:/usr/bin:/bin`), not the caller's: a user-level install such as pyenv under
//! `/root` is unreachable for the unprivileged uid. `RECTIFY_SANDBOX_PYTHON` overrides it.

#![cfg(target_os = "linux")]

use std::collections::hash_map::RandomState;
use std::ffi::CString;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rayon::prelude::*;

/// Resource limits for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock limit; the whole process group is killed when it passes.
    pub wall: Duration,
    /// `RLIMIT_CPU` (soft; the hard limit is one second more so SIGXCPU arrives first), per
    /// process. The default is above the wall limit, so that which limit stops a single-threaded
    /// endless loop is no race: its CPU time cannot pass the wall time since its start, so the
    /// deadline comes first, and a CPU kill that still comes after the deadline (the parent was
    /// slow to wake) counts as [`Status::Timeout`] too. The status is stored with results and
    /// rollouts, which must come out the same on every run.
    pub cpu_seconds: u64,
    /// `RLIMIT_AS`, per process.
    pub memory_bytes: u64,
    /// `RLIMIT_FSIZE`: the largest file a run may write.
    pub file_bytes: u64,
    /// `RLIMIT_NPROC` (threads count too). Together with `memory_bytes` it bounds a run's memory.
    pub processes: u64,
    /// Size of the private tmpfs work dir; only used as root with `CAP_SYS_ADMIN` (see [`isolation`]).
    pub disk_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            wall: Duration::from_secs(10),
            // Above `wall`: see the field's docs.
            cpu_seconds: 12,
            memory_bytes: 1 << 30,
            file_bytes: 10 << 20,
            // Benchmark solutions never need a second process; 8 keeps a fork-and-allocate bomb
            // under 8 GiB per run.
            processes: 8,
            disk_bytes: 64 << 20,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Exited 0 after running to the end of the program (tests passed).
    Passed,
    /// Exited non-zero: a failed assertion, an exception, a syntax error.
    Failed { exit_code: i32 },
    /// Exited 0 without reaching the end of the program (`sys.exit(0)`, `os._exit(0)`).
    ExitedEarly,
    /// Killed at the wall-clock limit.
    Timeout,
    /// Killed by `RLIMIT_CPU`.
    CpuTimeExceeded,
    /// Ran out of its address-space limit (`MemoryError`).
    MemoryExceeded,
    /// Killed by some other signal (segfault, abort, ...).
    Crashed { signal: i32 },
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `status == Status::Passed`.
    pub passed: bool,
    pub status: Status,
    /// Last [`TAIL_BYTES`] of stdout (without the completion marker).
    pub stdout_tail: String,
    /// Last [`TAIL_BYTES`] of stderr.
    pub stderr_tail: String,
    /// From spawn until the process exited or was killed.
    pub wall: Duration,
    /// Pid of the interpreter, which is also the run's process-group and session id.
    pub pid: u32,
    /// The private uid the run used, when running as root.
    pub uid: Option<u32>,
}

/// How much of stdout and stderr an [`Outcome`] keeps.
pub const TAIL_BYTES: usize = 8 * 1024;

/// The sandbox's own `PATH`; see the module docs for why the interpreter is looked up here.
const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Which containment layers are active on this machine, for logs and for the caller to decide
/// whether that is strong enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Isolation {
    /// Landlock ABI version used to confine writes (and from ABI 6, signals); `None` means only
    /// the Python-level [`FALLBACK_GUARD`] confines them.
    pub landlock_abi: Option<u32>,
    /// Each run has its own uid (we are root): `RLIMIT_NPROC` counts only the run, and stray
    /// processes are swept by uid.
    pub dedicated_uid: bool,
    /// The work dir is a private tmpfs of [`Limits::disk_bytes`] in its own mount namespace.
    pub private_tmpfs: bool,
}

impl Isolation {
    /// Whether the kernel keeps a run's signals inside the run: it has a uid of its own, which may
    /// not signal ours, or Landlock (ABI ≥ 6) scopes its signals to its own processes.
    pub fn signals_contained(&self) -> bool {
        self.dedicated_uid || self.landlock_abi.is_some_and(|abi| abi >= 6)
    }

    /// Whether runs start behind the Python-level [`FALLBACK_GUARD`]: when the kernel confines
    /// neither writes (no Landlock) nor signals.
    pub fn needs_fallback_guard(&self) -> bool {
        self.landlock_abi.is_none() || !self.signals_contained()
    }
}

/// The containment this process can set up, detected once.
pub fn isolation() -> Isolation {
    static DETECTED: OnceLock<Isolation> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        let caps = effective_capabilities();
        let has = |bit: u32| caps & (1u64 << bit) != 0;
        const CAP_CHOWN: u32 = 0;
        const CAP_SETGID: u32 = 6;
        const CAP_SETUID: u32 = 7;
        const CAP_SYS_ADMIN: u32 = 21;
        let root = unsafe { libc::geteuid() } == 0;
        let private_tmpfs = root && has(CAP_SYS_ADMIN) && has(CAP_SETUID) && has(CAP_SETGID);
        let dedicated_uid = root && has(CAP_SETUID) && has(CAP_SETGID) && (private_tmpfs || has(CAP_CHOWN));
        Isolation { landlock_abi: landlock_abi(), dedicated_uid, private_tmpfs }
    })
}

fn effective_capabilities() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok()))
        .unwrap_or(0)
}

/// The code in a model's answer: the first fenced block (of any language tag), else the whole text.
/// The same fence handling as the pipeline's filter ([`crate::answer::code_of`]), so that training
/// filters and scoring agree on what the code is.
pub fn extract_code(model_output: &str) -> String {
    crate::answer::code_of(model_output).to_string()
}

/// A HumanEval program. `completion` is code (see [`extract_code`]): either the body that
/// continues `code_prompt`, or a whole `def <entry_point>(...)`. A whole function is appended
/// after the prompt rather than replacing it, because prompts carry imports and helpers (e.g.
/// `encode_cyclic`) the function needs; the prompt's stub (docstring only) is then redefined.
pub fn humaneval_program(code_prompt: &str, completion: &str, test: &str, entry_point: &str) -> String {
    let def = format!("def {entry_point}(");
    let async_def = format!("async def {entry_point}(");
    let whole_function = completion.lines().any(|l| l.starts_with(&def) || l.starts_with(&async_def));
    let mut program = String::with_capacity(code_prompt.len() + completion.len() + test.len() + 64);
    program.push_str(code_prompt);
    if whole_function {
        if !program.ends_with('\n') {
            program.push('\n');
        }
        program.push('\n');
    }
    program.push_str(completion);
    program.push_str("\n\n");
    program.push_str(test);
    program.push_str(&format!("\n\ncheck({entry_point})\n"));
    program
}

/// An MBPP program: the code, then `test_setup_code` (which may use the code's definitions, e.g.
/// task 367 builds trees of the solution's `Node`), then the asserts.
pub fn mbpp_program(completion_code: &str, test_setup_code: &str, test_list: &[String]) -> String {
    let mut program = String::new();
    program.push_str(completion_code);
    program.push('\n');
    program.push_str(test_setup_code);
    program.push('\n');
    for test in test_list {
        program.push_str(test);
        program.push('\n');
    }
    program
}

/// Runs `programs` with at most `parallelism` at a time; outcomes are in input order, and
/// `on_done` sees each as it finishes (a progress bar). Fails only if the sandbox itself could
/// not run (no python3, no temp dir, ...).
pub fn run_many(
    programs: &[String],
    limits: &Limits,
    parallelism: usize,
    on_done: impl Fn(&Outcome) + Sync,
) -> anyhow::Result<Vec<Outcome>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(parallelism.max(1))
        .thread_name(|i| format!("sandbox-{i}"))
        .build()
        .context("building the sandbox thread pool")?;
    pool.install(|| {
        programs
            .par_iter()
            .map(|p| {
                let outcome = run_python(p, limits)?;
                on_done(&outcome);
                Ok(outcome)
            })
            .collect()
    })
}

/// Runs one Python program in the sandbox and reports how it ended. `Err` only when the sandbox
/// could not be set up; anything the program does is an [`Outcome`].
pub fn run_python(program: &str, limits: &Limits) -> anyhow::Result<Outcome> {
    run_with(program, limits, isolation())
}

fn run_with(program: &str, limits: &Limits, iso: Isolation) -> anyhow::Result<Outcome> {
    let python = python()?;
    let scratch = Scratch::new()?;
    let work = scratch.root.join("work");
    std::fs::create_dir(&work).with_context(|| format!("creating {}", work.display()))?;

    let marker = format!("__rectify_done_{:016x}{:016x}__", random_u64(), random_u64());
    let program_path = scratch.root.join("program.py");
    let mut text = String::with_capacity(program.len() + 96);
    text.push_str(program);
    text.push_str(&format!("\n__import__('os').write(1, b'\\n{marker}\\n')\n"));
    write_readable(&program_path, &text)?;

    let uid = iso.dedicated_uid.then(next_sandbox_uid);
    if uid.is_some() {
        scratch.check_reachable_by_others()?;
    }
    if let (Some(uid), false) = (uid, iso.private_tmpfs) {
        std::os::unix::fs::chown(&work, Some(uid), Some(uid)).context("handing the work dir to the sandbox uid")?;
    }

    let mut cmd = Command::new(python);
    cmd.arg("-I").arg("-B").arg("-u");
    if iso.needs_fallback_guard() {
        let guard = scratch.root.join("guard.py");
        write_readable(&guard, FALLBACK_GUARD)?;
        cmd.arg(&guard).arg(&program_path);
    } else {
        cmd.arg(&program_path);
    }
    cmd.current_dir(&work)
        .env_clear()
        .env("PATH", SANDBOX_PATH)
        .env("HOME", &work)
        .env("TMPDIR", &work)
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    let setup = ChildSetup::new(limits, &work, uid, iso)?;
    // SAFETY: `child_setup` only makes async-signal-safe system calls on data prepared above.
    unsafe {
        cmd.pre_exec(move || child_setup(&setup));
    }

    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {} in the sandbox ({iso:?})", python.display()))?;
    let pid = child.id() as libc::pid_t;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let mut streams = match (Stream::new(stdout.into()), Stream::new(stderr.into())) {
        (Ok(out), Ok(err)) => [out, err],
        (Err(e), _) | (_, Err(e)) => {
            // Don't leave a run behind that nobody is timing.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = reap(pid);
            if let Some(uid) = uid {
                sweep_uid(uid);
            }
            return Err(e).context("reading the sandbox's output");
        }
    };
    let pidfd = PidFd::open(pid);

    let deadline = start + limits.wall;
    let timed_out = loop {
        if has_exited(pid) {
            break false;
        }
        let now = Instant::now();
        if now >= deadline {
            break true;
        }
        // Without a pidfd nothing wakes us when the child exits with its pipes still held open
        // (by a background child), so poll on a short tick instead.
        let mut wait = deadline - now;
        if pidfd.is_none() {
            wait = wait.min(Duration::from_millis(10));
        }
        poll_and_read(&mut streams, pidfd.as_ref(), wait);
    };
    let wall = start.elapsed();

    // The child is exited-but-unreaped or still running, so its pid is still the group's id and
    // cannot have been reused.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let (status, rusage) = reap(pid)?;
    if let Some(uid) = uid {
        let survivors = sweep_uid(uid);
        if survivors > 0 {
            tracing::warn!(uid, survivors, "sandbox processes survived the sweep");
        }
    }
    // Everything that could write to the pipes is dead (or, as non-root, escaped the group);
    // don't wait long for the latter.
    let grace = Instant::now() + Duration::from_millis(300);
    while streams.iter().any(|s| s.open) && Instant::now() < grace {
        poll_and_read(&mut streams, None, Duration::from_millis(20));
    }
    drop(child);
    let [out, err] = streams.map(|s| s.tail);

    let finished = out.contains(marker.as_bytes());
    let stdout_tail = out.into_string().replace(&format!("\n{marker}\n"), "");
    let stderr_tail = err.into_string();
    let cpu = timeval_secs(rusage.ru_utime) + timeval_secs(rusage.ru_stime);
    let status = classify(status, timed_out, wall >= limits.wall, finished, cpu, limits, &stderr_tail);
    Ok(Outcome { passed: status == Status::Passed, status, stdout_tail, stderr_tail, wall, pid: pid as u32, uid })
}

/// `overran`: the wall limit had passed by the time the run ended. It decides a CPU-limit kill
/// (which of the two limits fired first would otherwise be a race), not an exit of the program's
/// own, however late the parent saw it.
fn classify(wstatus: libc::c_int, timed_out: bool, overran: bool, finished: bool, cpu: f64, limits: &Limits, stderr: &str) -> Status {
    if timed_out {
        return Status::Timeout;
    }
    // The exception that ended the program is the last line of its traceback. Forked children
    // write their tracebacks to the same pipe, interleaved line by line and sometimes cut short,
    // so the last line of stderr may be a header or a source line of another process's traceback;
    // the last line shaped like an exception (`Name` or `Name: message`) is the one that counts.
    // Where interleaving broke every such line, a MemoryError anywhere is the best evidence left.
    let out_of_memory = match stderr.lines().rev().find(|l| is_exception_line(l)) {
        Some(last_exception) => last_exception.starts_with("MemoryError"),
        None => stderr.contains("MemoryError"),
    };
    if libc::WIFSIGNALED(wstatus) {
        let signal = libc::WTERMSIG(wstatus);
        // The hard CPU limit (one second past the soft one) arrives as a plain SIGKILL.
        if signal == libc::SIGXCPU || (signal == libc::SIGKILL && cpu >= limits.cpu_seconds as f64) {
            return if overran { Status::Timeout } else { Status::CpuTimeExceeded };
        }
        if out_of_memory || stderr.contains("MemoryError") || stderr.contains("Cannot allocate memory") {
            return Status::MemoryExceeded;
        }
        return Status::Crashed { signal };
    }
    let exit_code = libc::WEXITSTATUS(wstatus);
    match exit_code {
        0 if finished => Status::Passed,
        0 => Status::ExitedEarly,
        _ if out_of_memory => Status::MemoryExceeded,
        _ => Status::Failed { exit_code },
    }
}

/// Whether a stderr line is the last line of a Python traceback: an unindented, dotted class name
/// in CapWords (`MemoryError`, `pkg.mod.Custom`), alone or before `: message`. Source lines
/// (`x = bytearray(10**11)`) and other prints (`done`) are not.
fn is_exception_line(line: &str) -> bool {
    let name = line.split_once(':').map_or(line, |(name, _)| name).trim_end();
    let class = name.rsplit('.').next().unwrap_or("");
    !name.is_empty()
        && name
            .split('.')
            .all(|part| part.starts_with(|c: char| c.is_alphabetic() || c == '_') && part.chars().all(|c| c.is_alphanumeric() || c == '_'))
        && class.starts_with(char::is_uppercase)
        && !line.starts_with("Traceback (most recent call last)")
}

/// Installed in front of the program when the kernel has no Landlock, or when nothing at the OS
/// level keeps the run's signals in (see [`Isolation::needs_fallback_guard`]). It is a Python
/// audit hook: it cannot be removed from Python, but native code, or a bug in this list of
/// events, gets past it — so it is a weaker, Python-level restriction, not an OS boundary.
pub const FALLBACK_GUARD: &str = r#"
import os, sys

def _rectify_guard():
    root = os.path.realpath(os.getcwd())
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    def inside(path):
        if isinstance(path, int):
            return True  # an already-open descriptor, which had to pass this hook to be opened
        try:
            full = os.path.realpath(os.path.join(root, os.fsdecode(path)))
        except Exception:
            return False
        return full == root or full.startswith(root + os.sep) or full == os.devnull
    # Which arguments name something the call creates or changes (link and rename also make the
    # source reachable for writing, so both sides count).
    path_args = {
        "os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1), "os.truncate": (0,),
        "os.symlink": (1,), "os.link": (0, 1), "os.chmod": (0,), "os.chown": (0,), "os.utime": (0,),
        "shutil.rmtree": (0,), "shutil.copyfile": (1,), "shutil.move": (0, 1), "os.mkfifo": (0,), "os.mknod": (0,),
    }
    refused = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen",
               "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "ctypes.call_function")
    # Signals stay inside the run's process group: without a uid of its own or Landlock's signal
    # scope, nothing else stops `os.kill(os.getppid(), 9)` or `os.kill(-1, 9)`.
    def own_group(pid):
        group = os.getpgid(0)
        if pid == 0 or pid == -group:
            return True
        try:
            return pid > 0 and os.getpgid(pid) == group
        except OSError:
            return False
    # fcntl F_SETOWN / F_SETOWN_EX and ioctl FIOSETOWN / SIOCSPGRP name a process to signal on I/O.
    signal_owner_fcntl = (8, 15)
    signal_owner_ioctl = (0x8901, 0x8902)
    def hook(event, args):
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            if path is None:
                return
            writing = (isinstance(mode, str) and any(c in mode for c in "wxa+")) or \
                      (isinstance(flags, int) and flags & write_flags)
            if writing and not inside(path):
                raise PermissionError(f"sandbox: writing outside the work dir is not allowed: {path!r}")
        elif event in path_args:
            for i in path_args[event]:
                path = args[i] if i < len(args) else None
                if path is not None and not inside(path):
                    raise PermissionError(f"sandbox: {event} outside the work dir is not allowed: {path!r}")
        elif event == "os.kill" and not own_group(args[0]):
            raise PermissionError(f"sandbox: signalling pid {args[0]}, outside the run, is not allowed")
        elif event == "os.killpg" and args[0] not in (0, os.getpgid(0)):
            raise PermissionError(f"sandbox: signalling process group {args[0]}, outside the run, is not allowed")
        elif (event == "fcntl.fcntl" and args[1] in signal_owner_fcntl) or \
             (event == "fcntl.ioctl" and args[1] in signal_owner_ioctl):
            raise PermissionError(f"sandbox: {event} setting a signal owner is not allowed")
        elif event.startswith(refused):
            raise PermissionError(f"sandbox: {event} is not allowed")
        elif event == "import" and args and args[0] in ("ctypes", "_ctypes"):
            raise PermissionError("sandbox: ctypes is not allowed")
    sys.addaudithook(hook)
    # Signalling by pidfd (which a `/proc/<pid>` directory fd also is) raises no audit event.
    import signal, _signal
    for module in (signal, _signal):
        module.__dict__.pop("pidfd_send_signal", None)

_rectify_guard()
del _rectify_guard
import runpy
runpy.run_path(sys.argv[1], run_name="__main__")
"#;

fn python() -> anyhow::Result<&'static Path> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = PYTHON.get_or_init(|| {
        if let Some(p) = std::env::var_os("RECTIFY_SANDBOX_PYTHON") {
            return Ok(PathBuf::from(p));
        }
        SANDBOX_PATH
            .split(':')
            .map(|dir| Path::new(dir).join("python3"))
            .find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o001 != 0))
            .ok_or_else(|| format!("no world-executable python3 in {SANDBOX_PATH}; set RECTIFY_SANDBOX_PYTHON"))
    });
    match found {
        Ok(p) => Ok(p),
        Err(e) => bail!("{e}"),
    }
}

fn write_readable(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    // The sandbox uid is not the owner.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

fn random_u64() -> u64 {
    // RandomState is seeded from the OS per instance; good enough for an unguessable marker.
    let mut h = RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// The per-run temp dir: `program.py` (read-only for the sandbox) and `work/` (its cwd, the only
/// writable place). Removed on drop.
struct Scratch {
    root: PathBuf,
}

impl Scratch {
    fn new() -> anyhow::Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let base = std::env::temp_dir();
        for _ in 0..100 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let root = base.join(format!("rectify-sandbox-{}-{n}-{:08x}", std::process::id(), random_u64() as u32));
            match std::fs::create_dir(&root) {
                Ok(()) => {
                    // Traversable by the sandbox uid, writable only by us.
                    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))?;
                    return Ok(Scratch { root });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating a sandbox dir in {}", base.display())),
            }
        }
        bail!("could not create a fresh sandbox dir in {}", base.display())
    }
}

impl Scratch {
    /// The private uid has no rights of its own, so every ancestor must be world-searchable;
    /// otherwise every run would fail with python unable to open the program.
    fn check_reachable_by_others(&self) -> anyhow::Result<()> {
        for dir in self.root.ancestors().skip(1) {
            let mode = std::fs::metadata(dir).with_context(|| format!("inspecting {}", dir.display()))?.permissions().mode();
            if mode & 0o001 == 0 {
                bail!(
                    "{} is not searchable by other users, so the sandbox uid cannot reach its program; \
                     point TMPDIR at a world-searchable dir such as /tmp",
                    dir.display()
                );
            }
        }
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.root) {
            tracing::warn!(dir = %self.root.display(), error = %e, "could not remove sandbox dir");
        }
    }
}

/// Private uids live in [UID_BASE, UID_BASE + 2^29): far above any real account and below 2^31.
const UID_BASE: u32 = 1_500_000_000;

/// A uid no other live run uses: this process's pid picks a block of 4096, a counter a uid in it.
/// Two processes collide only if their pids are congruent mod 2^17 and each has 4096 runs between
/// them, so sharing a uid (and so its NPROC budget and sweep) is practically impossible.
fn next_sandbox_uid() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 4096;
    UID_BASE + (std::process::id() % (1 << 17)) * 4096 + n
}

#[cfg(target_env = "gnu")]
type RlimitResource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type RlimitResource = libc::c_int;

/// Everything the child needs, prepared before fork: after fork in a multi-threaded process the
/// child may not allocate.
struct ChildSetup {
    rlimits: [(RlimitResource, libc::rlim_t, libc::rlim_t); 5],
    uid: Option<u32>,
    tmpfs: Option<(CString, CString)>,
    landlock: Option<(u32, CString)>,
}

impl ChildSetup {
    fn new(limits: &Limits, work: &Path, uid: Option<u32>, iso: Isolation) -> anyhow::Result<Self> {
        let work_c = CString::new(work.as_os_str().as_bytes())?;
        let tmpfs = match (iso.private_tmpfs, uid) {
            (true, Some(uid)) => {
                Some((work_c.clone(), CString::new(format!("size={},nr_inodes=4096,mode=0700,uid={uid},gid={uid}", limits.disk_bytes))?))
            }
            _ => None,
        };
        Ok(ChildSetup {
            rlimits: [
                (libc::RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1),
                (libc::RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
                (libc::RLIMIT_FSIZE, limits.file_bytes, limits.file_bytes),
                (libc::RLIMIT_NPROC, limits.processes, limits.processes),
                (libc::RLIMIT_CORE, 0, 0),
            ],
            uid,
            tmpfs,
            landlock: iso.landlock_abi.map(|abi| (abi, work_c)),
        })
    }
}

/// Runs in the forked child, before exec. Only async-signal-safe system calls.
fn child_setup(s: &ChildSetup) -> io::Result<()> {
    unsafe {
        check(libc::setsid())?;
        if let Some((work, opts)) = &s.tmpfs {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Private first, so the tmpfs does not propagate back into the host's namespace.
            check(libc::mount(std::ptr::null(), c"/".as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()))?;
            check(libc::mount(
                c"tmpfs".as_ptr(),
                work.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                opts.as_ptr().cast(),
            ))?;
            // Our cwd still points at the directory underneath the new mount.
            check(libc::chdir(work.as_ptr()))?;
        }
        for &(resource, soft, hard) in &s.rlimits {
            check(libc::setrlimit(resource, &libc::rlimit { rlim_cur: soft, rlim_max: hard }))?;
        }
        if let Some(uid) = s.uid {
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setresgid(uid, uid, uid))?;
            check(libc::setresuid(uid, uid, uid))?;
        }
        // Set after the uid change, which clears it. Ties the run to the thread waiting for it.
        let zero: libc::c_ulong = 0;
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, zero, zero, zero))?;
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, zero, zero, zero))?;
        if let Some((abi, work)) = &s.landlock {
            landlock_restrict(*abi, work)?;
        }
    }
    Ok(())
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

// Landlock UAPI (linux/landlock.h).
const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
const LANDLOCK_RULE_PATH_BENEATH: libc::c_int = 1;
const ACCESS_FS_WRITE_FILE: u64 = 1 << 1;
const ACCESS_FS_REMOVE_DIR: u64 = 1 << 4;
const ACCESS_FS_REMOVE_FILE: u64 = 1 << 5;
const ACCESS_FS_MAKE_CHAR: u64 = 1 << 6;
const ACCESS_FS_MAKE_DIR: u64 = 1 << 7;
const ACCESS_FS_MAKE_REG: u64 = 1 << 8;
const ACCESS_FS_MAKE_SOCK: u64 = 1 << 9;
const ACCESS_FS_MAKE_FIFO: u64 = 1 << 10;
const ACCESS_FS_MAKE_BLOCK: u64 = 1 << 11;
const ACCESS_FS_MAKE_SYM: u64 = 1 << 12;
const ACCESS_FS_REFER: u64 = 1 << 13; // ABI 2
const ACCESS_FS_TRUNCATE: u64 = 1 << 14; // ABI 3
const ACCESS_FS_IOCTL_DEV: u64 = 1 << 15; // ABI 5
const ACCESS_NET_BIND_TCP: u64 = 1 << 0; // ABI 4
const ACCESS_NET_CONNECT_TCP: u64 = 1 << 1; // ABI 4
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0; // ABI 6
const SCOPE_SIGNAL: u64 = 1 << 1; // ABI 6

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

fn landlock_abi() -> Option<u32> {
    let abi = unsafe {
        libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<RulesetAttr>(), 0usize, LANDLOCK_CREATE_RULESET_VERSION)
    };
    (abi > 0).then_some(abi as u32)
}

/// Reads stay unrestricted (the interpreter needs its stdlib); only write-type accesses are
/// "handled", and then allowed beneath the work dir and on /dev/null.
unsafe fn landlock_restrict(abi: u32, work: &CString) -> io::Result<()> {
    let mut fs = ACCESS_FS_WRITE_FILE
        | ACCESS_FS_REMOVE_DIR
        | ACCESS_FS_REMOVE_FILE
        | ACCESS_FS_MAKE_CHAR
        | ACCESS_FS_MAKE_DIR
        | ACCESS_FS_MAKE_REG
        | ACCESS_FS_MAKE_SOCK
        | ACCESS_FS_MAKE_FIFO
        | ACCESS_FS_MAKE_BLOCK
        | ACCESS_FS_MAKE_SYM;
    if abi >= 2 {
        fs |= ACCESS_FS_REFER;
    }
    if abi >= 3 {
        fs |= ACCESS_FS_TRUNCATE;
    }
    if abi >= 5 {
        fs |= ACCESS_FS_IOCTL_DEV;
    }
    let net = if abi >= 4 { ACCESS_NET_BIND_TCP | ACCESS_NET_CONNECT_TCP } else { 0 };
    let scoped = if abi >= 6 { SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL } else { 0 };
    let attr = RulesetAttr { handled_access_fs: fs, handled_access_net: net, scoped };
    unsafe {
        // Older kernels accept the larger struct as long as the fields they don't know are zero.
        let ruleset = libc::syscall(libc::SYS_landlock_create_ruleset, &attr, std::mem::size_of::<RulesetAttr>(), 0u32);
        if ruleset < 0 {
            return Err(io::Error::last_os_error());
        }
        let ruleset = ruleset as libc::c_int;
        // Only file rights may be granted on a file.
        let devnull_rights = fs & (ACCESS_FS_WRITE_FILE | ACCESS_FS_TRUNCATE);
        for (path, rights) in [(work.as_ptr(), fs), (c"/dev/null".as_ptr(), devnull_rights)] {
            let fd = libc::open(path, libc::O_PATH | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let rule = PathBeneathAttr { allowed_access: rights, parent_fd: fd };
            let ret = libc::syscall(libc::SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &rule, 0u32);
            let add_err = io::Error::last_os_error();
            libc::close(fd);
            if ret < 0 {
                return Err(add_err);
            }
        }
        if libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) < 0 {
            return Err(io::Error::last_os_error());
        }
        libc::close(ruleset);
    }
    Ok(())
}

fn set_nonblocking(fd: libc::c_int) -> io::Result<()> {
    unsafe {
        let flags = check(libc::fcntl(fd, libc::F_GETFL))?;
        check(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
    }
    Ok(())
}

/// Wakes the poll loop the moment the child exits, even while a background child keeps its pipes open.
struct PidFd(libc::c_int);

impl PidFd {
    fn open(pid: libc::pid_t) -> Option<Self> {
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
        (fd >= 0).then_some(PidFd(fd as libc::c_int))
    }
}

impl Drop for PidFd {
    fn drop(&mut self) {
        unsafe { libc::close(self.0) };
    }
}

/// Exited (or killed) but not reaped: checked with WNOWAIT so the pid stays ours until the group
/// has been killed.
fn has_exited(pid: libc::pid_t) -> bool {
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let ret = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
    ret == 0 && unsafe { info.si_pid() } == pid
}

fn reap(pid: libc::pid_t) -> anyhow::Result<(libc::c_int, libc::rusage)> {
    let mut status = 0;
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let ret = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
        if ret == pid {
            return Ok((status, rusage));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e).context("waiting for the sandboxed python");
        }
    }
}

fn timeval_secs(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// One of the child's output pipes, read without blocking.
struct Stream {
    file: std::fs::File,
    tail: Tail,
    open: bool,
}

impl Stream {
    fn new(fd: std::os::fd::OwnedFd) -> io::Result<Self> {
        let file = std::fs::File::from(fd);
        set_nonblocking(file.as_raw_fd())?;
        Ok(Stream { file, tail: Tail::default(), open: true })
    }
}

fn poll_and_read(streams: &mut [Stream], pidfd: Option<&PidFd>, wait: Duration) {
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(3);
    for s in streams.iter().filter(|s| s.open) {
        fds.push(libc::pollfd { fd: s.file.as_raw_fd(), events: libc::POLLIN, revents: 0 });
    }
    if let Some(p) = pidfd {
        fds.push(libc::pollfd { fd: p.0, events: libc::POLLIN, revents: 0 });
    }
    if fds.is_empty() {
        std::thread::sleep(wait);
        return;
    }
    let ms = wait.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    let mut buf = [0u8; 64 * 1024];
    for s in streams.iter_mut().filter(|s| s.open) {
        loop {
            match s.file.read(&mut buf) {
                Ok(0) => {
                    s.open = false;
                    break;
                }
                Ok(n) => s.tail.push(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    s.open = false;
                    break;
                }
            }
        }
    }
}

/// Keeps the last [`TAIL_BYTES`] of a stream while draining all of it, so a program printing
/// forever neither blocks on a full pipe nor fills our memory.
#[derive(Default)]
struct Tail {
    buf: Vec<u8>,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > 4 * TAIL_BYTES {
            self.buf.drain(..self.buf.len() - TAIL_BYTES);
        }
    }

    fn contains(&self, needle: &[u8]) -> bool {
        self.buf.windows(needle.len()).any(|w| w == needle)
    }

    fn into_string(mut self) -> String {
        if self.buf.len() > TAIL_BYTES {
            self.buf.drain(..self.buf.len() - TAIL_BYTES);
        }
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

/// Kills every process running as the run's private uid, wherever it moved (another process
/// group, another session), and returns how many were still alive afterwards.
///
/// `kill(-1, ...)` signals every process the *caller* may signal, so it is sent from a forked
/// helper that has fully become `uid` (real, effective and saved — a real uid of 0 would make
/// every root process a target) and that verifies this before sending anything.
fn sweep_uid(uid: u32) -> usize {
    let mut survivors = 0;
    for _ in 0..20 {
        let helper = unsafe { libc::fork() };
        if helper == 0 {
            // Child of a multi-threaded process: raw system calls only, then _exit.
            unsafe {
                if libc::syscall(libc::SYS_setresgid, uid, uid, uid) != 0 || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0 {
                    libc::_exit(1);
                }
                let (mut r, mut e, mut s) = (0, 0, 0);
                if libc::getresuid(&mut r, &mut e, &mut s) != 0 || r != uid || e != uid || s != uid {
                    libc::_exit(2);
                }
                libc::kill(-1, libc::SIGKILL);
                libc::_exit(0);
            }
        }
        if helper > 0 {
            let mut status = 0;
            unsafe { libc::waitpid(helper, &mut status, 0) };
        }
        // SIGKILLed processes take a moment to die; zombies of the uid (awaiting their new
        // parent's wait) are harmless and not counted.
        std::thread::sleep(Duration::from_millis(2));
        survivors = live_processes_of(uid).len();
        if survivors == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    survivors
}

/// Pids of processes whose real uid is `uid` that are not zombies. Reads the uid from `status`
/// rather than the owner of `/proc/<pid>`, which is root for processes marked non-dumpable.
fn live_processes_of(uid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| real_uid(pid) == Some(uid))
        .filter(|&pid| process_state(pid).is_some_and(|s| s != 'Z' && s != 'X'))
        .collect()
}

fn real_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}

/// State letter and process-group id from `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is parenthesised and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

fn process_state(pid: u32) -> Option<char> {
    proc_stat(pid).map(|(s, _)| s)
}

/// Pids of live (non-zombie) processes in process group `pgid`.
#[cfg(test)]
fn live_processes_in_group(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| proc_stat(pid).is_some_and(|(s, g)| g == pgid && s != 'Z' && s != 'X'))
        .collect()
}

#[cfg(test)]
mod tests;
