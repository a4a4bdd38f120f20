//! Starting a supervised program: vfork + exec, with the set-up a supervised child needs.
//!
//! `std::process::Command` forks as soon as a `pre_exec` step is needed, and the agent needs
//! one: the parent-death signal (so children do not outlive a killed agent) and the original
//! open-files limit. A fork copies the agent's page tables and makes every page it writes next
//! copy-on-write, which was most of the agent's own time when it started 200 processes.
//! Here the child shares the agent's memory (`CLONE_VM | CLONE_VFORK`, as glibc's posix_spawn
//! does) until it execs, and the agent waits meanwhile: in a side-by-side loop 35-45 % less
//! time for 200 spawns; in bench/run 110-118 ms instead of 140-167. The price is that the
//! child, between clone and exec, may only make system calls on data prepared beforehand: no
//! allocation, no locks, no panics.
//!
//! The child is reaped through a pidfd, at once when it exits (no polling).

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;
use tokio::io::unix::AsyncFd;

/// Stack of the child between clone and exec: it only runs `child_main`'s system calls.
const CHILD_STACK: usize = 64 * 1024;

/// Exit as Circus reports it: the status, or the negated signal number.
pub type ExitCode = Option<i32>;

/// What to start, and how.
pub struct Program<'a> {
    /// A path, or a name looked up in the child's `PATH`.
    pub program: &'a OsStr,
    /// argv[1..].
    pub args: &'a [String],
    /// The child's whole environment.
    pub env: Vec<(OsString, OsString)>,
    pub working_dir: Option<&'a Path>,
    pub capture_stdout: bool,
    pub capture_stderr: bool,
    /// RLIMIT_NOFILE (soft, hard) for the child, if the agent's own differs.
    pub open_files: Option<(u64, u64)>,
}

/// A started child: its pid, a pidfd to reap it with, and the read ends of captured output.
pub struct Child {
    pub pid: u32,
    pidfd: OwnedFd,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// Everything the child reads between clone and exec, prepared by the agent; the child writes
/// back only `failure` (it shares the agent's memory, and the agent waits until it execs).
struct Plan {
    /// Paths to execve in turn (one, or one per `PATH` entry).
    candidates: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    working_dir: Option<CString>,
    stdin: RawFd,
    stdout: Option<RawFd>,
    stderr: Option<RawFd>,
    open_files: Option<libc::rlimit>,
    agent: libc::pid_t,
    /// Set by the child when a step fails: the errno it failed with.
    failure: libc::c_int,
}

/// Starts `program` in a process group of its own.
pub fn spawn(program: &Program) -> io::Result<Child> {
    let args: Vec<CString> = std::iter::once(program.program.as_bytes())
        .chain(program.args.iter().map(|a| a.as_bytes()))
        .map(c_string)
        .collect::<io::Result<_>>()?;
    let env: Vec<CString> = program
        .env
        .iter()
        .map(|(key, value)| {
            let mut entry = key.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            c_string(&entry)
        })
        .collect::<io::Result<_>>()?;
    let path_of_child = program
        .env
        .iter()
        .find(|(key, _)| key == "PATH")
        .map(|(_, value)| value.as_os_str());
    let candidates = candidates(program.program, path_of_child)?;
    let working_dir = program
        .working_dir
        .map(|dir| c_string(dir.as_os_str().as_bytes()))
        .transpose()?;
    let stdin = dev_null()?;
    let stdout = program.capture_stdout.then(pipe).transpose()?;
    let stderr = program.capture_stderr.then(pipe).transpose()?;
    let mut plan = Plan {
        candidates,
        argv: null_terminated(&args),
        envp: null_terminated(&env),
        working_dir,
        stdin,
        stdout: stdout.as_ref().map(|(_, write)| write.as_raw_fd()),
        stderr: stderr.as_ref().map(|(_, write)| write.as_raw_fd()),
        open_files: program.open_files.map(|(soft, hard)| libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        }),
        agent: std::process::id() as libc::pid_t,
        failure: 0,
    };
    let mut stack = Vec::<u8>::with_capacity(CHILD_STACK);
    // SAFETY: the child runs `child_main` on its own stack, reading `plan` (kept alive and
    // unchanged here until clone returns, which CLONE_VFORK delays until the child has exec'd
    // or exited). All signals are blocked around the clone so that no handler of the agent
    // runs in the child on the shared memory; the child resets them before unblocking.
    let pid = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut before: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut before);
        let top = stack.as_mut_ptr().add(stack.capacity()) as *mut libc::c_void;
        let pid = libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::addr_of_mut!(plan) as *mut libc::c_void,
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_error);
        }
        pid
    };
    // SAFETY: the child has exec'd or exited: nothing writes `plan` any more.
    let failure = unsafe { std::ptr::read_volatile(std::ptr::addr_of!(plan.failure)) };
    if failure != 0 {
        // It exited (127) before exec: reap it here, it was never a supervised process.
        let _ = waitpid(Pid::from_raw(pid), None);
        return Err(io::Error::from_raw_os_error(failure));
    }
    // SAFETY: plain system call; the pid is our unreaped child, so it cannot be reused.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        let error = io::Error::last_os_error();
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(pid), None);
        return Err(error);
    }
    Ok(Child {
        pid: pid as u32,
        // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
        pidfd: unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) },
        stdout: stdout.map(|(read, _)| read),
        stderr: stderr.map(|(read, _)| read),
    })
}

impl Child {
    /// Waits for the child to exit and reaps it.
    pub async fn wait(self) -> io::Result<ExitCode> {
        // SAFETY: the pidfd is owned by the AsyncFd, so it stays open while registered.
        let pidfd =
            unsafe { AsyncFd::register_with_interest(self.pidfd, tokio::io::Interest::READABLE) }
                .map_err(|e| io::Error::other(e.to_string()))?;
        let pid = Pid::from_raw(self.pid as i32);
        loop {
            let mut ready = pidfd.readable().await?;
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)).map_err(io::Error::from)? {
                WaitStatus::Exited(_, code) => return Ok(Some(code)),
                WaitStatus::Signaled(_, signal, _) => return Ok(Some(-(signal as i32))),
                // Not exited (a spurious wake-up, or stopped/continued): wait on.
                _ => ready.clear_ready(),
            }
        }
    }
}

/// The child, between clone and exec. Only async-signal-safe system calls on `plan`.
extern "C" fn child_main(plan: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `plan` points to the agent's Plan, alive while the agent waits for this child.
    unsafe {
        let plan = &mut *(plan as *mut Plan);
        // Handlers the agent installed must not run here (they would run on its memory);
        // SIGPIPE, which the Rust runtime ignores, gets its default back as std gives it.
        for signal in 1..=libc::SIGRTMAX() {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut current) != 0 {
                continue;
            }
            if current.sa_sigaction != libc::SIG_DFL
                && (current.sa_sigaction != libc::SIG_IGN || signal == libc::SIGPIPE)
            {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        // Its own process group, so a stop can reach every descendant with one killpg.
        if libc::setpgid(0, 0) != 0 {
            return fail(plan);
        }
        for (fd, target) in [(Some(plan.stdin), 0), (plan.stdout, 1), (plan.stderr, 2)] {
            let Some(fd) = fd else { continue };
            // Already in place (the agent's own 0-2 were closed): keep it open past exec.
            let placed = if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            };
            if placed < 0 {
                return fail(plan);
            }
        }
        // Nothing of the agent's past 0-2: not its sockets, not ZeroMQ's epoll descriptors
        // (libzmq does not open them close-on-exec), not what the agent itself inherited
        // (as Circus, whose children get close_fds). A kernel before 5.9 lacks close_range:
        // there the inheritable ones stay open, as they would through std's Command.
        libc::close_range(3, libc::c_uint::MAX, 0);
        if let Some(dir) = &plan.working_dir {
            if libc::chdir(dir.as_ptr()) != 0 {
                return fail(plan);
            }
        }
        if let Some(limit) = &plan.open_files {
            if libc::setrlimit(libc::RLIMIT_NOFILE, limit) != 0 {
                return fail(plan);
            }
        }
        // If the agent dies without stopping its children, they get SIGTERM rather than
        // running on unsupervised; if it already died, at once.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
            return fail(plan);
        }
        if libc::getppid() != plan.agent {
            libc::kill(libc::getpid(), libc::SIGTERM);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        // As execvp: the first candidate that exists; EACCES if one existed but could not run.
        let mut denied = false;
        for path in &plan.candidates {
            libc::execve(path.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
            match *libc::__errno_location() {
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR => {}
                _ => return fail(plan),
            }
        }
        if denied {
            *libc::__errno_location() = libc::EACCES;
        }
        fail(plan)
    }
}

/// Records errno for the agent and ends the child.
///
/// # Safety
/// Only in the child, before exec.
unsafe fn fail(plan: &mut Plan) -> libc::c_int {
    let errno = *libc::__errno_location();
    std::ptr::write_volatile(
        &mut plan.failure,
        if errno == 0 { libc::ENOENT } else { errno },
    );
    libc::_exit(127)
}

/// The agent's one descriptor of /dev/null, every child's stdin (dup'd onto 0): opened at the
/// first spawn, not at each of them.
fn dev_null() -> io::Result<RawFd> {
    static DEV_NULL: OnceLock<File> = OnceLock::new();
    if let Some(file) = DEV_NULL.get() {
        return Ok(file.as_raw_fd());
    }
    let file = File::open("/dev/null")?;
    Ok(DEV_NULL.get_or_init(|| file).as_raw_fd())
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{:?} contains a NUL byte", String::from_utf8_lossy(bytes)),
        )
    })
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The paths to try, as the core's [`troupe::config::program_candidates`] finds them.
fn candidates(program: &OsStr, path: Option<&OsStr>) -> io::Result<Vec<CString>> {
    if program.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    }
    troupe::config::program_candidates(program, path)
        .iter()
        .map(|candidate| c_string(candidate.as_os_str().as_bytes()))
        .collect()
}

/// A pipe for captured output: (read end for the agent, write end for the child). Both close
/// on exec; the child's dup2 onto 1 or 2 is what it keeps.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_looked_up_in_every_path_entry_and_a_path_is_used_as_is() {
        let found = candidates(OsStr::new("sleep"), Some(OsStr::new("/a:/b/c::")))
            .unwrap()
            .into_iter()
            .map(|c| c.into_string().unwrap())
            .collect::<Vec<_>>();
        assert_eq!(found, ["/a/sleep", "/b/c/sleep", "./sleep", "./sleep"]);
        let found = candidates(OsStr::new("./bin/x"), Some(OsStr::new("/a"))).unwrap();
        assert_eq!(found, [CString::new("./bin/x").unwrap()]);
        assert!(candidates(OsStr::new(""), None).is_err());
    }
}
