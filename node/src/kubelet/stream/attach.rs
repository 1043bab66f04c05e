//! Attach: the running container's output from now on, read from its log file as it grows
//! (its shim copies the container's stdout and stderr there, one CRI record per line).
//! The container's stdin is /dev/null, so attaching stdin is refused before the upgrade.

use bytes::Bytes;

use super::{Outbound, Outcome, Session};
use crate::kubelet::logs::{self, Tail};
use crate::kubelet::runtime::InstanceFiles;

/// Follow the instance's output until it ends (Success, as upstream says when the
/// container exits) or the client goes away. With a terminal, stderr goes to stdout.
pub async fn run(files: &InstanceFiles, session: Session) -> Outcome {
    let Session { stdout, stderr, gone, .. } = session;
    let (stdout, stderr) = (stdout.as_ref(), stderr.as_ref());
    logs::follow(Tail::from_end(&files.log), &files.exit_file(), gone.cancelled(), |new| async move {
        send(&new, stdout, stderr).await
    })
    .await;
    Outcome::Exited(0)
}

/// Send the text of whole CRI records, each to its stream (stderr to stdout when there is
/// no stderr channel), runs of one stream together; false once the client is gone.
async fn send(records: &[u8], stdout: Option<&Outbound>, stderr: Option<&Outbound>) -> bool {
    let mut run: Vec<u8> = Vec::new();
    let mut run_to: Option<&Outbound> = None;
    for line in records.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Some(l) = logs::parse_line(line) else { continue };
        let to = match logs::stream_of(line) {
            Some(b"stderr") => stderr.or(stdout),
            _ => stdout,
        };
        if run_to.map(|o| o.id) != to.map(|o| o.id) && !run.is_empty() {
            if let Some(o) = run_to {
                if !o.send(Bytes::from(std::mem::take(&mut run))).await {
                    return false;
                }
            }
            run.clear();
        }
        run_to = to;
        logs::render_line(&l, &logs::LogOptions::default(), &mut run);
    }
    match run_to {
        Some(o) if !run.is_empty() => o.send(Bytes::from(run)).await,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::runtime::shim;
    use crate::kubelet::stream::Out;
    use std::io::Write;
    use std::time::Duration;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    #[tokio::test]
    async fn output_from_now_on_by_stream_until_the_container_ends() {
        let d = tempfile::tempdir().unwrap();
        let files = InstanceFiles { dir: d.path().to_path_buf(), log: d.path().join("0.log") };
        std::fs::write(&files.log, "2026-01-01T00:00:01Z stdout F before\n").unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let s = Session {
            stdin: None,
            stdout: Some(Outbound::new(1, tx.clone())),
            stderr: Some(Outbound::new(2, tx)),
            resize: None,
            gone: CancellationToken::new(),
        };
        let files2 = files.clone();
        let attach = tokio::spawn(async move { run(&files2, s).await });
        // On this one-thread runtime, attach runs up to its first wait: it is at the end.
        tokio::task::yield_now().await;
        let mut log = std::fs::OpenOptions::new().append(true).open(&files.log).unwrap();
        log.write_all(b"2026-01-01T00:00:02Z stdout F one\n2026-01-01T00:00:02Z stdout P tw\n2026-01-01T00:00:02Z stdout F o\n2026-01-01T00:00:03Z stderr F err\n").unwrap();
        // What was written before the end is sent before attach ends.
        shim::write_exit(&files.exit_file(), 0);
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), attach).await.unwrap().unwrap(), Outcome::Exited(0));
        let mut got = Vec::new();
        while let Ok(o) = rx.try_recv() {
            got.push(o);
        }
        assert_eq!(got, [Out::Data(1, Bytes::from_static(b"one\ntwo\n")), Out::Data(2, Bytes::from_static(b"err\n"))]);
    }
}
