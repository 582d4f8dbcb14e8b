//! These run real `python3` subprocesses; the attack tests check both the reported outcome and
//! the machine afterwards (files, processes).

use super::*;
use serde_json::Value;
use std::collections::BTreeMap;

fn run(program: &str) -> Outcome {
    run_python(program, &Limits::default()).expect("sandbox runs")
}

fn run_limited(program: &str, limits: &Limits) -> Outcome {
    run_python(program, limits).expect("sandbox runs")
}

/// The same isolation as this machine offers, minus Landlock, to exercise the fallback guard.
fn without_landlock() -> Isolation {
    Isolation { landlock_abi: None, ..isolation() }
}

fn assert_no_leftovers(o: &Outcome) {
    // Give SIGKILLed processes a moment to be torn down before calling them survivors.
    for _ in 0..50 {
        if live_processes_in_group(o.pid).is_empty() && o.uid.is_none_or(|u| live_processes_of(u).is_empty()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "stray processes after the run: group {} has {:?}, uid {:?} has {:?}",
        o.pid,
        live_processes_in_group(o.pid),
        o.uid,
        o.uid.map(live_processes_of)
    );
}

fn dataset(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/raw").join(path)
}

/// Set by CI, which runs as root: every containment layer must be there, so a test that would
/// skip for lack of one fails instead, and CI runs all of them.
const REQUIRE_ALL: &str = "RECTIFY_SANDBOX_REQUIRE_ALL";

/// Whether a test that needs a containment layer can run here. If not, it prints `SKIPPED:` and
/// the reason, or fails when [`REQUIRE_ALL`] is set.
fn layer_available(available: bool, reason: &str) -> bool {
    if available {
        return true;
    }
    assert!(std::env::var_os(REQUIRE_ALL).is_none(), "{REQUIRE_ALL} is set, but {reason}");
    eprintln!("SKIPPED: {reason}");
    false
}

#[test]
fn sandbox_reports_isolation() {
    // Printed so a test log records which layers the attack tests below exercised.
    let iso = isolation();
    eprintln!("sandbox isolation on this machine: {iso:?}; python: {:?}", python().ok());
    python().expect("a python3 interpreter for the sandbox");
    // The layers follow from the privileges: a private tmpfs is only set up for a dedicated uid.
    assert!(!iso.private_tmpfs || iso.dedicated_uid, "{iso:?}");
    if std::env::var_os(REQUIRE_ALL).is_some() {
        assert!(iso.dedicated_uid && iso.private_tmpfs && iso.landlock_abi.is_some_and(|abi| abi >= 4), "{REQUIRE_ALL}: {iso:?}");
    }
}

#[test]
fn sandbox_passing_program_passes() {
    let o = run("x = 1 + 1\nassert x == 2\nprint('hello')\n");
    assert_eq!(o.status, Status::Passed, "{o:?}");
    assert!(o.passed);
    assert!(o.stdout_tail.contains("hello"), "{o:?}");
    assert!(!o.stdout_tail.contains("__rectify_done_"), "marker leaked into stdout: {o:?}");
    assert_no_leftovers(&o);
}

#[test]
fn sandbox_failing_assert_fails() {
    let o = run("def f(x):\n    return x + 1\nassert f(1) == 3\n");
    assert_eq!(o.status, Status::Failed { exit_code: 1 }, "{o:?}");
    assert!(!o.passed);
    assert!(o.stderr_tail.contains("AssertionError"), "{o:?}");
}

#[test]
fn sandbox_syntax_error_fails() {
    let o = run("def f(:\n    pass\n");
    assert_eq!(o.status, Status::Failed { exit_code: 1 }, "{o:?}");
    assert!(o.stderr_tail.contains("SyntaxError"), "{o:?}");
}

#[test]
fn sandbox_exiting_zero_before_the_tests_is_not_a_pass() {
    for program in ["import sys\nsys.exit(0)\nassert False\n", "import os\nos._exit(0)\nassert False\n"] {
        let o = run(program);
        assert_eq!(o.status, Status::ExitedEarly, "{program}: {o:?}");
        assert!(!o.passed);
    }
}

#[test]
fn sandbox_from_future_import_still_works() {
    // Must stay the first statement, so nothing may be prepended to the program.
    let o = run("from __future__ import annotations\ndef f(x: int) -> int:\n    return x\nassert f(2) == 2\n");
    assert_eq!(o.status, Status::Passed, "{o:?}");
    let o = run_with("from __future__ import annotations\nassert True\n", &Limits::default(), without_landlock()).unwrap();
    assert_eq!(o.status, Status::Passed, "fallback guard: {o:?}");
}

#[test]
fn sandbox_infinite_loop_times_out_within_the_wall_limit() {
    let limits = Limits { wall: Duration::from_secs(2), cpu_seconds: 60, ..Limits::default() };
    let started = Instant::now();
    let o = run_limited("print('started', flush=True)\nwhile True:\n    pass\n", &limits);
    let total = started.elapsed();
    assert_eq!(o.status, Status::Timeout, "{o:?}");
    assert!(!o.passed);
    assert!(o.wall >= limits.wall, "{o:?}");
    // Generous margins: this runs beside the canonical-solution tests on 2 cores, and a VM may be
    // paused for a second; the 300 s the loop would otherwise run is what is ruled out.
    assert!(o.wall < limits.wall + Duration::from_secs(3), "killed late: {o:?}");
    assert!(total < limits.wall + Duration::from_secs(5), "run_python returned late: {total:?}");
    assert!(o.stdout_tail.contains("started"), "output before the kill is kept: {o:?}");
    assert_no_leftovers(&o);
}

#[test]
fn sandbox_cpu_limit_stops_a_busy_loop() {
    let limits = Limits { wall: Duration::from_secs(30), cpu_seconds: 1, ..Limits::default() };
    let o = run_limited("while True:\n    pass\n", &limits);
    assert_eq!(o.status, Status::CpuTimeExceeded, "{o:?}");
    assert!(o.wall < Duration::from_secs(20), "{o:?}");
}

/// Which of the wall and CPU limits stops an endless loop must not be a race: the status is
/// stored with results and rollouts, which must come out the same on every run.
#[test]
fn sandbox_endless_loop_status_is_no_race() {
    // The CPU limit is above the wall limit, so the wall deadline comes first for one thread.
    let defaults = Limits::default();
    assert!(defaults.cpu_seconds as f64 > defaults.wall.as_secs_f64(), "{defaults:?}");
    // A CPU kill that comes after the wall limit passed (the parent woke late) is a timeout too.
    let sigxcpu = libc::SIGXCPU;
    let sigkill_at_the_hard_limit = libc::SIGKILL;
    let cpu = defaults.cpu_seconds as f64 + 1.0;
    assert_eq!(classify(sigxcpu, false, true, false, cpu, &defaults, ""), Status::Timeout);
    assert_eq!(classify(sigkill_at_the_hard_limit, false, true, false, cpu, &defaults, ""), Status::Timeout);
    // Before the wall limit (several threads burning CPU), the CPU limit is what stopped it.
    assert_eq!(classify(sigxcpu, false, false, false, cpu, &defaults, ""), Status::CpuTimeExceeded);
    // Even with both limits equal, the racy setting, a busy loop reports a timeout every time.
    let limits = Limits { wall: Duration::from_secs(1), cpu_seconds: 1, ..Limits::default() };
    for _ in 0..3 {
        let o = run_limited("while True:\n    pass\n", &limits);
        assert_eq!(o.status, Status::Timeout, "{o:?}");
    }
}

#[test]
fn sandbox_fork_bomb_is_contained() {
    let started = Instant::now();
    let o = run("import os\nwhile True:\n    os.fork()\n");
    assert!(!o.passed, "{o:?}");
    assert!(started.elapsed() < Limits::default().wall + Duration::from_secs(10), "{o:?}");
    assert_no_leftovers(&o);
}

#[test]
fn sandbox_fork_bomb_stays_under_the_process_limit_and_is_killed() {
    let limits = Limits { wall: Duration::from_secs(3), ..Limits::default() };
    let program = "import os, time\n\
                   n = 0\n\
                   for _ in range(500):\n\
                   \x20   try:\n\
                   \x20       if os.fork() == 0:\n\
                   \x20           time.sleep(300)\n\
                   \x20           os._exit(0)\n\
                   \x20       n += 1\n\
                   \x20   except OSError:\n\
                   \x20       pass\n\
                   print('children', n, flush=True)\n\
                   time.sleep(300)\n";
    let o = run_limited(program, &limits);
    assert_eq!(o.status, Status::Timeout, "{o:?}");
    let children: u64 =
        o.stdout_tail.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no child count: {o:?}"));
    assert!(children < limits.processes, "{children} children despite RLIMIT_NPROC {}", limits.processes);
    assert_no_leftovers(&o);
}

#[test]
fn sandbox_processes_that_leave_the_group_are_killed_too() {
    // Documented limitation: without a private uid only the process group is killed.
    if !layer_available(isolation().dedicated_uid, "not root, so a setsid escapee is out of reach") {
        return;
    }
    let program = "import os, time\n\
                   r, w = os.pipe()\n\
                   pid = os.fork()\n\
                   if pid == 0:\n\
                   \x20   os.setsid()\n\
                   \x20   if os.fork() == 0:\n\
                   \x20       os.write(w, str(os.getpid()).encode())\n\
                   \x20       os.close(w)\n\
                   \x20       time.sleep(300)\n\
                   \x20   os._exit(0)\n\
                   os.close(w)\n\
                   os.waitpid(pid, 0)\n\
                   print('DAEMON', int(os.read(r, 32)), flush=True)\n";
    let o = run(program);
    assert_eq!(o.status, Status::Passed, "{o:?}");
    assert!(o.wall < Duration::from_secs(15), "waited for the escapee: {o:?}");
    let daemon: u32 = o.stdout_tail.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("daemon pid");
    for _ in 0..50 {
        if process_state(daemon).is_none_or(|s| s == 'Z' || s == 'X') {
            assert_no_leftovers(&o);
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("escaped daemon {daemon} is still alive");
}

#[test]
fn sandbox_memory_bombs_fail_and_the_machine_survives() {
    let huge = run("x = bytearray(10**11)\n");
    assert_eq!(huge.status, Status::MemoryExceeded, "{huge:?}");
    let growing = run("x = []\nwhile True:\n    x.append(b' ' * 10**7)\n");
    assert_eq!(growing.status, Status::MemoryExceeded, "{growing:?}");
    // Every process is capped separately; a forking allocator is bounded by processes × memory.
    let forking =
        run("import os\nfor _ in range(3):\n    try:\n        os.fork()\n    except OSError:\n        pass\nx = bytearray(10**11)\n");
    assert_eq!(forking.status, Status::MemoryExceeded, "{forking:?}");
    assert_no_leftovers(&forking);
    let after = run("assert sum(range(10)) == 45\n");
    assert!(after.passed, "{after:?}");
}

#[test]
fn sandbox_classifies_interleaved_tracebacks_by_the_last_exception() {
    // What a forking memory bomb left on stderr in one run: children killed mid-traceback.
    let stderr = "Traceback (most recent call last):\n  File \"program.py\", line 7, in <module>\n    x = bytearray(10**11)\nMemoryError\nTraceback (most recent call last):\nTraceback (most recent call last):\n";
    let exit_1 = 1 << 8;
    assert_eq!(classify(exit_1, false, false, false, 0.0, &Limits::default(), stderr), Status::MemoryExceeded);
    // A CI run's stderr (the sandbox path shortened): the last line is another child's source line, printed after the indent of
    // its `File` line went elsewhere.
    let interleaved = "Traceback (most recent call last):\nTraceback (most recent call last):\nTraceback (most recent call last):\nTraceback (most recent call last):\n  File \"program.py\", line 7, in <module>\n    x = bytearray(10**11)\n        ^^^^^^^^^^^^^^^^^\nMemoryError\n  File \"program.py\", line 7, in <module>\n      File \"program.py\", line 7, in <module>\n    Traceback (most recent call last):\nx = bytearray(10**11)\n   File \"program.py\", line 7, in <module>\n    x = bytearray(10**11)\n        ^^^^^^^^^^^^^^^^^\nMemoryError\nTraceback (most recent call last):\nx = bytearray(10**11)";
    assert_eq!(classify(exit_1, false, false, false, 0.0, &Limits::default(), interleaved), Status::MemoryExceeded);
    let other = "Traceback (most recent call last):\n  File \"program.py\", line 1, in <module>\nMemoryError\nAssertionError\n";
    assert_eq!(classify(exit_1, false, false, false, 0.0, &Limits::default(), other), Status::Failed { exit_code: 1 });
    let broken = "Traceback (most recent call last):\nMemoryError    x = bytearray(10**11)\n";
    assert_eq!(classify(exit_1, false, false, false, 0.0, &Limits::default(), broken), Status::MemoryExceeded);
    let custom = "MemoryError\nTraceback (most recent call last):\n  File \"program.py\", line 3, in <module>\nmypkg.errors.Boom: out of ideas\ndone\n";
    assert_eq!(classify(exit_1, false, false, false, 0.0, &Limits::default(), custom), Status::Failed { exit_code: 1 });
}

#[test]
fn sandbox_exception_lines_are_told_from_source_lines_and_prints() {
    for line in ["MemoryError", "MemoryError: cannot allocate", "mypkg.errors.Boom: x", "AssertionError", "KeyError: 'a: b'"] {
        assert!(is_exception_line(line), "{line}");
    }
    for line in ["x = bytearray(10**11)", "done", "  MemoryError", "Traceback (most recent call last):", "", "1.5: x", "a.b", "Bad Name: x"]
    {
        assert!(!is_exception_line(line), "{line}");
    }
}

/// Programs that try to write `target` in several ways; each must fail without creating it.
fn escape_attempts(target: &Path) -> Vec<String> {
    let t = target.display();
    vec![
        format!("open({t:?}, 'w').write('escaped')\n"),
        format!("import os\nfd = os.open({t:?}, os.O_WRONLY | os.O_CREAT)\nos.write(fd, b'escaped')\n"),
        format!("import os\nos.system('echo escaped > {t}')\nassert os.path.exists({t:?})\n"),
        format!("import subprocess\nsubprocess.run(['sh', '-c', 'echo escaped > {t}'], check=True)\nassert __import__('os').path.exists({t:?})\n"),
        format!("import os\nopen('inside', 'w').write('x')\nos.rename('inside', {t:?})\n"),
        format!("import os\nos.symlink('/etc/passwd', {t:?})\n"),
    ]
}

fn check_escapes_contained(iso: Isolation, label: &str) {
    let pid = std::process::id();
    let targets = [
        std::env::temp_dir().join(format!("rectify_sandbox_escape_{pid}_{label}")),
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("rectify_sandbox_escape_{pid}_{label}")),
        PathBuf::from(format!("/dev/shm/rectify_sandbox_escape_{pid}_{label}")),
    ];
    for target in &targets {
        let _ = std::fs::remove_file(target);
        for program in escape_attempts(target) {
            let o = run_with(&program, &Limits::default(), iso).expect("sandbox runs");
            let escaped = std::fs::symlink_metadata(target).is_ok();
            let _ = std::fs::remove_file(target);
            assert!(!escaped, "[{label}] wrote {} with:\n{program}\n{o:?}", target.display());
            assert!(!o.passed, "[{label}] escape attempt reported as passing:\n{program}\n{o:?}");
        }
    }
}

#[test]
fn sandbox_writes_outside_the_work_dir_are_contained() {
    check_escapes_contained(isolation(), "os");
}

#[test]
fn sandbox_fallback_guard_contains_writes_without_landlock() {
    check_escapes_contained(without_landlock(), "guard");
}

/// Tries to signal the test process (the sandboxed interpreter's parent) by pid, by process group
/// and by pidfd, and every process (`kill(-1)`), printing `<target> refused` or `<target> reached`
/// for each. Signal 0 goes through the same permission checks as SIGKILL but delivers nothing, so
/// a containment failure is reported by a test process that is still alive. Signalling the run's
/// own process, group and children must keep working.
const SIGNAL_PROBES: &str = r#"
import os, signal
os.kill(os.getpid(), 0)
os.kill(0, 0)
os.killpg(0, 0)
try:
    child = os.fork()
except OSError:
    child = None  # as non-root, RLIMIT_NPROC counts all of the user's processes
if child == 0:
    __import__("time").sleep(30)
    os._exit(0)
if child:
    os.kill(child, signal.SIGKILL)
    assert os.waitpid(child, 0)[1] == signal.SIGKILL

def by_pidfd(pid, sig):
    signal.pidfd_send_signal(os.pidfd_open(pid), sig)

def as_io_owner(pid, sig):
    # Only names the process SIGIO would go to; without O_ASYNC nothing is ever sent.
    import fcntl
    fcntl.fcntl(os.pipe()[0], fcntl.F_SETOWN, pid)

parent = os.getppid()
probes = [("parent", os.kill, parent), ("parent-group", os.killpg, os.getpgid(parent)),
          ("parent-pidfd", by_pidfd, parent), ("everyone", os.kill, -1), ("io-owner", as_io_owner, parent)]
for name, send, target in probes:
    try:
        send(target, 0)
        print(name, "reached")
    except (PermissionError, AttributeError):
        print(name, "refused")
"#;

#[test]
fn sandbox_programs_cannot_signal_processes_outside_the_run() {
    let machine = isolation();
    let non_root = |landlock_abi| Isolation { landlock_abi, dedicated_uid: false, private_tmpfs: false };
    let mut configs = vec![("machine", machine), ("guard only", non_root(None))];
    if let Some(abi) = machine.landlock_abi {
        // As non-root on an older kernel: Landlock confines writes but not signals.
        configs.push(("landlock < 6", non_root(Some(abi.min(5)))));
        if abi >= 6 {
            configs.push(("landlock scope", non_root(Some(abi))));
        }
    }
    for (label, iso) in configs {
        let o = run_with(SIGNAL_PROBES, &Limits::default(), iso).expect("sandbox runs");
        assert_eq!(o.status, Status::Passed, "[{label}] {iso:?}: {o:?}");
        for target in ["parent", "parent-group", "parent-pidfd"] {
            assert!(o.stdout_tail.contains(&format!("{target} refused")), "[{label}] {iso:?} signalled its {target}: {o:?}");
        }
        // `kill(-1)` reports success when every target refused, and the kernel checks an I/O
        // owner only when it signals, so these two show only the guard's own refusal.
        if iso.needs_fallback_guard() {
            for target in ["everyone", "io-owner"] {
                assert!(o.stdout_tail.contains(&format!("{target} refused")), "[{label}] {iso:?}: {o:?}");
            }
        }
    }
}

#[test]
fn sandbox_work_dir_is_writable() {
    let program = "import os, tempfile\n\
                   open('data.txt', 'w').write('hi')\n\
                   assert open('data.txt').read() == 'hi'\n\
                   os.mkdir('sub')\n\
                   os.rename('data.txt', 'sub/data.txt')\n\
                   with tempfile.TemporaryFile() as f:\n\
                   \x20   f.write(b'x')\n\
                   open(os.devnull, 'w').write('discarded')\n\
                   assert os.getcwd() == os.environ['HOME'] == os.environ['TMPDIR']\n";
    for (label, iso) in [("os", isolation()), ("guard", without_landlock())] {
        let o = run_with(program, &Limits::default(), iso).unwrap();
        assert_eq!(o.status, Status::Passed, "[{label}] {o:?}");
    }
}

#[test]
fn sandbox_file_size_is_limited() {
    let limits = Limits { file_bytes: 1 << 20, ..Limits::default() };
    let o = run_limited("open('big', 'wb').write(b'x' * (4 << 20))\n", &limits);
    assert_eq!(o.status, Status::Failed { exit_code: 1 }, "{o:?}");
    assert!(o.stderr_tail.contains("File too large"), "{o:?}");
}

#[test]
fn sandbox_work_dir_size_is_capped_on_a_private_tmpfs() {
    // Documented limitation: without it only RLIMIT_FSIZE bounds what a run writes.
    if !layer_available(isolation().private_tmpfs, "no private tmpfs here (needs root with CAP_SYS_ADMIN)") {
        return;
    }
    let limits = Limits { disk_bytes: 8 << 20, ..Limits::default() };
    let program = "n = 0\n\
                   try:\n\
                   \x20   while n < 100:\n\
                   \x20       with open(f'f{n}', 'wb') as f:\n\
                   \x20           f.write(b'x' * (1 << 20))\n\
                   \x20       n += 1\n\
                   except OSError as e:\n\
                   \x20   print('stopped', n, e.errno, flush=True)\n";
    let o = run_limited(program, &limits);
    assert_eq!(o.status, Status::Passed, "{o:?}");
    let fields: Vec<&str> = o.stdout_tail.split_whitespace().collect();
    assert_eq!(fields.first(), Some(&"stopped"), "{o:?}");
    assert_eq!(fields.get(2), Some(&"28"), "expected ENOSPC: {o:?}");
    assert!(fields[1].parse::<u64>().unwrap() <= 8, "{o:?}");
}

#[test]
fn sandbox_environment_is_cleared_and_privileges_dropped() {
    let dedicated = isolation().dedicated_uid;
    let program = format!(
        "import os, sys\n\
         extra = set(os.environ) - {{'PATH', 'HOME', 'TMPDIR', 'LANG', 'LC_CTYPE'}}\n\
         assert not extra, extra\n\
         assert os.environ['PATH'] == '/usr/local/bin:/usr/bin:/bin'\n\
         assert sys.flags.isolated\n\
         assert os.getpgid(0) == os.getpid() == os.getsid(0)\n\
         if {dedicated}:\n\
         \x20   assert os.getuid() != 0 and os.geteuid() != 0 and os.getgroups() == [], (os.getuid(), os.getgroups())\n\
         print(sys.version)\n",
        dedicated = if dedicated { "True" } else { "False" }
    );
    let o = run(&program);
    assert_eq!(o.status, Status::Passed, "{o:?}");
    assert!(o.stdout_tail.starts_with("3."), "{o:?}");
    // Said, where the privilege half above did not run (CI runs as root and requires it).
    layer_available(
        dedicated,
        "no dedicated uid to drop to (not root, or without CAP_SETUID/CAP_SETGID): dropping privileges was not checked",
    );
}

#[test]
fn sandbox_network_is_denied_with_landlock_net() {
    if !layer_available(isolation().landlock_abi.is_some_and(|abi| abi >= 4), "Landlock ABI < 4 cannot restrict TCP") {
        return;
    }
    let program = "import socket\n\
                   try:\n\
                   \x20   socket.create_connection(('127.0.0.1', 9), timeout=1)\n\
                   except PermissionError:\n\
                   \x20   print('denied')\n";
    let o = run(program);
    assert_eq!(o.status, Status::Passed, "{o:?}");
    assert!(o.stdout_tail.contains("denied"), "{o:?}");
}

#[test]
fn sandbox_run_many_keeps_input_order() {
    let programs: Vec<String> = (0..6).map(|i| format!("print({i})\nassert {i} != 3\n")).collect();
    let outcomes = run_many(&programs, &Limits::default(), 2, |_| {}).unwrap();
    assert_eq!(outcomes.len(), 6);
    for (i, o) in outcomes.iter().enumerate() {
        assert_eq!(o.stdout_tail.trim(), i.to_string(), "{o:?}");
        assert_eq!(o.passed, i != 3, "{o:?}");
    }
}

#[test]
fn sandbox_extract_code_takes_the_first_fenced_block() {
    let answer = "Here you go:\n```python\ndef f():\n    return 1\n```\nand\n```python\nx = 2\n```\n";
    assert_eq!(extract_code(answer), "def f():\n    return 1\n");
    assert_eq!(extract_code("def g():\n    return 2\n"), "def g():\n    return 2\n");
}

#[test]
fn sandbox_program_builders() {
    let prompt = "from typing import List\n\ndef add(xs: List[int]) -> int:\n    \"\"\"Sum.\"\"\"\n";
    let test = "def check(candidate):\n    assert candidate([1, 2]) == 3\n";
    let body = humaneval_program(prompt, "    return sum(xs)\n", test, "add");
    assert!(run(&body).passed, "{body}");
    let whole = humaneval_program(prompt, "def add(xs):\n    return sum(xs)\n", test, "add");
    assert!(run(&whole).passed, "{whole}");
    let wrong = humaneval_program(prompt, "def add(xs):\n    return 0\n", test, "add");
    assert!(!run(&wrong).passed, "{wrong}");

    let tests = vec!["assert double(2) == 4".to_string(), "assert double(0) == 0".to_string()];
    assert!(run(&mbpp_program("def double(x):\n    return 2 * x", "", &tests)).passed);
    assert!(!run(&mbpp_program("def double(x):\n    return x + 2", "", &tests)).passed);
}

fn read_jsonl(text: &str) -> Vec<Value> {
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).expect("valid JSON line")).collect()
}

fn failures(ids: &[String], outcomes: &[Outcome]) -> BTreeMap<String, String> {
    ids.iter()
        .zip(outcomes)
        .filter(|(_, o)| !o.passed)
        .map(|(id, o)| (id.clone(), format!("{:?}: {}", o.status, o.stderr_tail.lines().last().unwrap_or(""))))
        .collect()
}

#[test]
fn sandbox_humaneval_canonical_solutions_pass() {
    let path = dataset("humaneval/HumanEval.jsonl.gz");
    let out = Command::new("gzip").arg("-dc").arg(&path).output().expect("gzip");
    assert!(out.status.success(), "gzip -dc {}", path.display());
    let rows = read_jsonl(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(rows.len(), 164);
    let field = |r: &Value, k: &str| r[k].as_str().unwrap_or_else(|| panic!("{k} missing")).to_string();
    let mut ids = Vec::new();
    let mut programs = Vec::new();
    for r in &rows {
        let (prompt, solution, test, entry) =
            (field(r, "prompt"), field(r, "canonical_solution"), field(r, "test"), field(r, "entry_point"));
        ids.push(field(r, "task_id"));
        programs.push(humaneval_program(&prompt, &solution, &test, &entry));
        // The same solution as a whole function, as a model would write it.
        ids.push(format!("{} (whole function)", field(r, "task_id")));
        programs.push(humaneval_program(&prompt, &format!("{prompt}{solution}"), &test, &entry));
    }
    let started = Instant::now();
    let outcomes = run_many(&programs, &canonical_limits(), 2, |_| {}).unwrap();
    eprintln!("HumanEval: {} programs in {:?}", programs.len(), started.elapsed());
    let failed = failures(&ids, &outcomes);
    assert!(failed.is_empty(), "canonical HumanEval solutions failed: {failed:#?}");
}

/// The default limits with a wall limit for a loaded machine: MBPP 123 takes 2 s of CPU and runs
/// beside HumanEval's programs on 2 cores; the CPU limit still stops a hang.
fn canonical_limits() -> Limits {
    Limits { wall: Duration::from_secs(60), ..Limits::default() }
}

/// MBPP canonical solutions that fail in this sandbox, with the reason. Empty: with Python 3.11
/// all 974 pass (checked as well outside the sandbox); a new entry must say why.
const MBPP_KNOWN_FAILURES: &[(u64, &str)] = &[];

#[test]
fn sandbox_mbpp_canonical_solutions_pass() {
    let text = std::fs::read_to_string(dataset("mbpp/mbpp.jsonl")).expect("mbpp.jsonl");
    let rows = read_jsonl(&text);
    let mut ids = Vec::new();
    let mut programs = Vec::new();
    for r in &rows {
        let tests: Vec<String> = r["test_list"].as_array().expect("test_list").iter().map(|t| t.as_str().unwrap().to_string()).collect();
        ids.push(r["task_id"].as_u64().expect("task_id").to_string());
        programs.push(mbpp_program(r["code"].as_str().unwrap(), r["test_setup_code"].as_str().unwrap_or(""), &tests));
    }
    let present: std::collections::BTreeSet<u64> = ids.iter().map(|i| i.parse().unwrap()).collect();
    assert!((11..=510).all(|id| present.contains(&id)), "the test split (11-510) is incomplete");
    let started = Instant::now();
    let outcomes = run_many(&programs, &canonical_limits(), 2, |_| {}).unwrap();
    eprintln!("MBPP: {} programs in {:?}", programs.len(), started.elapsed());
    let failed = failures(&ids, &outcomes);
    let known: BTreeMap<String, String> = MBPP_KNOWN_FAILURES.iter().map(|(id, why)| (id.to_string(), why.to_string())).collect();
    let unexpected: BTreeMap<_, _> = failed.iter().filter(|(id, _)| !known.contains_key(*id)).collect();
    let now_passing: Vec<_> = known.keys().filter(|id| !failed.contains_key(*id)).collect();
    assert!(unexpected.is_empty(), "canonical MBPP solutions failed: {unexpected:#?}");
    assert!(now_passing.is_empty(), "listed as known failures but passed: {now_passing:?}");
}

#[test]
fn sandbox_leftover_checks_can_see_processes() {
    // The no-leftovers assertions above would pass vacuously if these scans saw nothing.
    let me = std::process::id();
    let uid = unsafe { libc::getuid() };
    assert_eq!(real_uid(me), Some(uid));
    assert!(live_processes_of(uid).contains(&me));
    let pgid = unsafe { libc::getpgid(0) } as u32;
    assert!(live_processes_in_group(pgid).contains(&me));
}
