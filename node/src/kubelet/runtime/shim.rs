//! The container shim (conmon's job): one small process per container, in its own session,
//! that runs `runc run` in the foreground, copies the container's stdout and stderr into
//! its log file in the CRI format (`<RFC3339Nano> <stream> F <line>`, what `kubectl logs`
//! reads), and when the container ends writes its exit code to the exit file. The kubelet
//! can restart at any time: the shim and the container live on, and the exit file tells
//! the restarted kubelet how the container ended.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

/// What the shim is told (its command line: `keelson shim --runtime … --root … --bundle …
/// --id … --log … --exit-file … --runtime-log … --pid-file …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimArgs {
    pub runtime: PathBuf,
    pub root: PathBuf,
    pub bundle: PathBuf,
    pub id: String,
    pub log: PathBuf,
    pub exit_file: PathBuf,
    pub runtime_log: PathBuf,
    pub pid_file: PathBuf,
}

impl ShimArgs {
    /// The arguments after `shim`.
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut out = Vec::new();
        for (flag, value) in [
            ("--runtime", self.runtime.as_os_str()),
            ("--root", self.root.as_os_str()),
            ("--bundle", self.bundle.as_os_str()),
            ("--id", std::ffi::OsStr::new(&self.id)),
            ("--log", self.log.as_os_str()),
            ("--exit-file", self.exit_file.as_os_str()),
            ("--runtime-log", self.runtime_log.as_os_str()),
            ("--pid-file", self.pid_file.as_os_str()),
        ] {
            out.push(flag.into());
            out.push(value.to_os_string());
        }
        out
    }

    /// Parse the arguments after `shim`.
    pub fn parse(args: &[std::ffi::OsString]) -> Result<ShimArgs, String> {
        let mut it = args.iter();
        let mut get = std::collections::HashMap::new();
        while let Some(flag) = it.next() {
            let flag = flag.to_str().ok_or("a flag is not UTF-8")?.to_string();
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            get.insert(flag, PathBuf::from(value));
        }
        let mut take = |f: &str| get.remove(f).ok_or_else(|| format!("shim: {f} is required"));
        Ok(ShimArgs {
            runtime: take("--runtime")?,
            root: take("--root")?,
            bundle: take("--bundle")?,
            id: take("--id")?.to_string_lossy().into_owned(),
            log: take("--log")?,
            exit_file: take("--exit-file")?,
            runtime_log: take("--runtime-log")?,
            pid_file: take("--pid-file")?,
        })
    }
}

/// How a container ended, as its shim recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitRecord {
    pub exit_code: i32,
    pub finished_at: String,
}

/// The shim's pid file, beside the exit file.
pub fn shim_pid_file(exit_file: &Path) -> PathBuf {
    exit_file.with_file_name("shim.pid")
}

/// Record an exit the shim could not (it is gone): `code` now.
pub fn write_exit(path: &Path, code: i32) {
    let record = ExitRecord { exit_code: code, finished_at: now_rfc3339_nano() };
    let tmp = path.with_extension("tmp");
    if let Ok(body) = serde_json::to_vec(&record) {
        if std::fs::write(&tmp, body).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
}

pub fn read_exit(path: &Path) -> Option<ExitRecord> {
    let body = std::fs::read(path).ok()?;
    serde_json::from_slice(&body).ok()
}

/// A timestamp in RFC 3339 with nanoseconds, as CRI log lines carry.
pub fn now_rfc3339_nano() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%9fZ").to_string()
}

/// The longest log record: a longer line is split into partial (`P`) records, as
/// containerd's CRI plugin does (so a container writing no newlines costs bounded memory).
const MAX_RECORD: u64 = 16 * 1024;

/// Copy `from` into `log` line by line, each prefixed CRI-style.
fn copy_lines(from: impl Read, log: &Path, stream: &str) {
    let Ok(mut out) = OpenOptions::new().create(true).append(true).open(log) else { return };
    let mut reader = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.by_ref().take(MAX_RECORD).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let whole = line.ends_with(b"\n") || (n as u64) < MAX_RECORD;
                let body = line.strip_suffix(b"\n").unwrap_or(&line);
                let tag = if whole { "F" } else { "P" };
                let mut rec = format!("{} {stream} {tag} ", now_rfc3339_nano()).into_bytes();
                rec.extend_from_slice(body);
                rec.push(b'\n');
                // One write per line: the two streams' lines never interleave mid-line.
                if out.write_all(&rec).is_err() {
                    return;
                }
            }
        }
    }
}

/// Run the container to its end; the shim's exit code is the container's.
pub fn run(args: &ShimArgs) -> i32 {
    // Its own session: the kubelet's signals (Ctrl-C, a restart) never reach it.
    let _ = rustix::process::setsid();
    // Who watches the container: a restarted kubelet tells a lost container (its shim
    // gone, no exit record) from a running one by this.
    let _ = std::fs::write(shim_pid_file(&args.exit_file), std::process::id().to_string());
    let spawned = Command::new(&args.runtime)
        .arg("--root")
        .arg(&args.root)
        .arg("--log")
        .arg(&args.runtime_log)
        .arg("--log-format")
        .arg("json")
        .arg("run")
        .arg("--bundle")
        .arg(&args.bundle)
        .arg("--pid-file")
        .arg(&args.pid_file)
        .arg(&args.id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let code = match spawned {
        Err(e) => {
            append_runtime_error(&args.runtime_log, &format!("cannot run {}: {e}", args.runtime.display()));
            128
        }
        Ok(mut child) => {
            let out = child.stdout.take().map(|o| {
                let log = args.log.clone();
                std::thread::spawn(move || copy_lines(o, &log, "stdout"))
            });
            let err = child.stderr.take().map(|e| {
                let log = args.log.clone();
                std::thread::spawn(move || copy_lines(e, &log, "stderr"))
            });
            let status = child.wait();
            for t in [out, err].into_iter().flatten() {
                let _ = t.join();
            }
            match status {
                Ok(s) => s.code().unwrap_or_else(|| {
                    use std::os::unix::process::ExitStatusExt;
                    128 + s.signal().unwrap_or(0)
                }),
                Err(_) => 128,
            }
        }
    };
    write_exit(&args.exit_file, code);
    code
}

fn append_runtime_error(path: &Path, msg: &str) {
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
        let line = serde_json::json!({ "level": "error", "msg": msg, "time": now_rfc3339_nano() });
        let _ = writeln!(f, "{line}");
    }
}

/// The last error the runtime logged (its `--log` in JSON lines), if any.
pub fn last_runtime_error(path: &Path) -> Option<String> {
    let f = File::open(path).ok()?;
    let mut last = None;
    for line in BufReader::new(f).lines().map_while(Result::ok) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if matches!(v["level"].as_str(), Some("error" | "fatal")) {
            if let Some(m) = v["msg"].as_str() {
                last = Some(m.to_string());
            }
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        let a = ShimArgs {
            runtime: "/usr/sbin/runc".into(),
            root: "/run/r".into(),
            bundle: "/b".into(),
            id: "abc".into(),
            log: "/l".into(),
            exit_file: "/e".into(),
            runtime_log: "/rl".into(),
            pid_file: "/p".into(),
        };
        assert_eq!(ShimArgs::parse(&a.to_args()).unwrap(), a);
        let e = ShimArgs::parse(&["--id".into(), "x".into()]).unwrap_err();
        assert!(e.contains("--runtime"), "{e}");
        assert!(ShimArgs::parse(&["--id".into()]).unwrap_err().contains("needs a value"));
    }

    #[test]
    fn lines_are_copied_in_cri_format_and_errors_found() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        copy_lines(&b"hello\nworld"[..], &log, "stdout");
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with(" stdout F hello") && lines[1].ends_with(" stdout F world"), "{text}");
        assert!(lines[0].split(' ').next().unwrap().parse::<jiff::Timestamp>().is_ok());
        // A line longer than a record is split into partial records, then a full one.
        let long = dir.path().join("1.log");
        let big = vec![b'x'; 40 * 1024];
        copy_lines(&[&big[..], b"\n"].concat()[..], &long, "stdout");
        let text = std::fs::read_to_string(&long).unwrap();
        let tags: Vec<&str> = text.lines().map(|l| l.split(' ').nth(2).unwrap()).collect();
        assert_eq!(tags, ["P", "P", "F"]);
        let rendered = crate::kubelet::logs::render(text.as_bytes(), &Default::default());
        assert_eq!(rendered.len(), big.len() + 1, "the parts join back into the line");
        let rl = dir.path().join("runtime.log");
        std::fs::write(&rl, "{\"level\":\"info\",\"msg\":\"a\"}\nnot json\n{\"level\":\"error\",\"msg\":\"exec: \\\"nope\\\": executable file not found in $PATH\"}\n").unwrap();
        assert!(last_runtime_error(&rl).unwrap().contains("executable file not found"));
        assert_eq!(last_runtime_error(&dir.path().join("missing")), None);
    }
}
