//! Running a child process under a deadline: the bash that evaluates
//! vm.conf and `udevadm control --reload` both go through [`run`].
//!
//! Never through a shell: the caller builds the [`Command`] (program,
//! arguments, environment, stdin). The child gets a process group of its
//! own, so that when the deadline passes the whole group is killed,
//! including what it started in the background. Its stdout and stderr are
//! read (each capped) until they close, within the same deadline: a
//! background process that keeps a pipe open cannot hold bbvirt.

use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What a finished child left.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Why a child did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// The program could not be started.
    #[error("cannot run it")]
    Spawn(#[source] io::Error),
    /// The deadline passed; the child's process group was killed.
    #[error("no answer after {} s (killed)", .0.as_secs())]
    TimedOut(Duration),
}

/// Runs `cmd` (stdout and stderr captured, at most `max_output` bytes each)
/// and waits for it at most `limit`.
pub fn run(cmd: &mut Command, limit: Duration, max_output: u64) -> Result<Finished, ChildError> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(ChildError::Spawn)?;
    let pgid = child.id();
    let out_rx = spawn_reader(child.stdout.take(), max_output);
    let err_rx = spawn_reader(child.stderr.take(), max_output);
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(None) | Err(_) => {
                kill_group(pgid);
                let _ = child.wait();
                return Err(ChildError::TimedOut(limit));
            }
        }
    };
    let collect = |rx: mpsc::Receiver<Vec<u8>>| {
        let left = deadline.saturating_duration_since(Instant::now());
        rx.recv_timeout(left).map_err(|_| {
            // Something the child started in the background holds the pipe.
            kill_group(pgid);
            ChildError::TimedOut(limit)
        })
    };
    let stdout = collect(out_rx)?;
    let stderr = collect(err_rx)?;
    Ok(Finished {
        status,
        stdout,
        stderr,
    })
}

/// An exit status in words: "exit status 2", "killed by signal 9".
pub fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown status".to_string(),
    }
}

/// The first few non-empty lines of a child's stderr, on one line.
pub fn stderr_summary(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(5)
        .collect();
    if lines.is_empty() {
        "no error output".to_string()
    } else {
        lines.join("; ")
    }
}

fn spawn_reader<R: Read + Send + 'static>(pipe: Option<R>, max: u64) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(p) = pipe {
            let _ = p.take(max).read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}

fn kill_group(pgid: u32) {
    if let Ok(pgid) = i32::try_from(pgid) {
        // SAFETY: plain kill(2) on the process group created for the child.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_bounded() {
        let ms = Duration::from_millis;
        let done = run(&mut Command::new("/bin/true"), ms(5000), 1024).unwrap();
        assert!(done.status.success());
        let done = run(&mut Command::new("/bin/false"), ms(5000), 1024).unwrap();
        assert_eq!(describe_status(done.status), "exit status 1");
        let start = Instant::now();
        let r = run(Command::new("/bin/sleep").arg("10"), ms(200), 1024);
        assert!(r.unwrap_err().to_string().contains("no answer"));
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(matches!(
            run(&mut Command::new("/nonexistent/x"), ms(200), 1024),
            Err(ChildError::Spawn(_))
        ));
    }
}
