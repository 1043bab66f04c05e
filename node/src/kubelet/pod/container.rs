//! One container of a pod, on this node: its record (which instance runs now, how often it
//! restarted, how the last one ended — kept on disk so a restarted kubelet carries on),
//! what it is observed to be doing, and starting a new instance of it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::status::State;
use crate::kubelet::runtime::{self, InstanceFiles};

/// What the kubelet keeps about a container between its instances.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The current instance: 0 for the first, +1 per restart.
    pub attempt: u32,
    /// Its runtime id.
    pub id: String,
    pub image: String,
    pub image_id: String,
    pub started_at: Option<String>,
    /// The runtime's error when the instance could not start.
    pub start_error: Option<String>,
    /// How the previous instance ended (the status' `lastState`).
    pub last: Option<Terminated>,
}

/// A terminated instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: String,
    pub container_id: String,
}

impl Terminated {
    pub fn state(&self) -> State {
        State::Terminated {
            exit_code: self.exit_code,
            reason: self.reason.clone(),
            message: self.message.clone(),
            started_at: self.started_at.clone(),
            finished_at: self.finished_at.clone(),
            container_id: Some(self.container_id.clone()),
        }
    }
}

/// A container's directory in its pod's.
pub fn dir(pod_dir: &Path, name: &str) -> PathBuf {
    pod_dir.join("containers").join(name)
}

/// The files of instance `attempt`; its log is `<pod>/logs/<name>/<attempt>.log`.
pub fn instance(pod_dir: &Path, name: &str, attempt: u32) -> InstanceFiles {
    InstanceFiles {
        dir: dir(pod_dir, name).join(attempt.to_string()),
        log: pod_dir.join("logs").join(name).join(format!("{attempt}.log")),
    }
}

pub fn load(pod_dir: &Path, name: &str) -> Option<Record> {
    serde_json::from_slice(&std::fs::read(dir(pod_dir, name).join("record.json")).ok()?).ok()
}

pub fn save(pod_dir: &Path, name: &str, r: &Record) -> std::io::Result<()> {
    let d = dir(pod_dir, name);
    std::fs::create_dir_all(&d)?;
    let tmp = d.join("record.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(r).map_err(std::io::Error::other)?)?;
    std::fs::rename(tmp, d.join("record.json"))
}

/// The runtime id of instance `attempt` of container `name` of pod `uid`.
pub fn runtime_id(uid: &str, name: &str, attempt: u32) -> String {
    format!("k-{uid}-{name}-{attempt}")
}

/// The pod uid in a runtime id of ours (`k-<uid>-…`; uids are 36 characters).
pub fn uid_of_runtime_id(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("k-")?;
    rest.get(..36).filter(|u| rest.len() > 36 && u.chars().filter(|c| *c == '-').count() == 4)
}

/// How the current instance ended, if it has.
pub fn terminated(pod_dir: &Path, name: &str, r: &Record) -> Option<Terminated> {
    let files = instance(pod_dir, name, r.attempt);
    if !files.exit_file().exists() && lost(&files, r) {
        // Its shim is gone without a word (killed, the host rebooted) or it never ran:
        // the container ended as far as anyone can tell.
        runtime::shim::write_exit(&files.exit_file(), 137);
    }
    let exit = runtime::shim::read_exit(&files.exit_file())?;
    let (reason, message) = match &r.start_error {
        Some(e) => ("StartError".to_string(), Some(e.clone())),
        None if exit.exit_code == 0 => ("Completed".to_string(), None),
        None if exit.exit_code == 137 && oom_killed(&files) => ("OOMKilled".to_string(), None),
        None => ("Error".to_string(), None),
    };
    Some(Terminated {
        exit_code: if r.start_error.is_some() { 128 } else { exit.exit_code },
        reason,
        message,
        started_at: r.started_at.clone().or_else(|| Some(exit.finished_at.clone())),
        finished_at: exit.finished_at,
        container_id: format!("runc://{}", r.id),
    })
}

/// Whether an instance with no exit record can never get one: its shim ran and is gone,
/// or it never ran (the start failed, or the kubelet stopped in between; records are only
/// looked at outside a start).
fn lost(files: &InstanceFiles, r: &Record) -> bool {
    let shim = std::fs::read_to_string(runtime::shim::shim_pid_file(&files.exit_file()))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok());
    match shim {
        Some(pid) => !runtime::alive(pid),
        None => r.start_error.is_some() || r.started_at.is_none(),
    }
}

/// Whether the runtime logged an OOM kill for the instance.
fn oom_killed(files: &InstanceFiles) -> bool {
    std::fs::read_to_string(files.runtime_log()).is_ok_and(|l| l.contains("oom"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_records() {
        let uid = "0f8b7a4e-1c2d-4e5f-8a9b-0123456789ab";
        let id = runtime_id(uid, "web", 3);
        assert_eq!(uid_of_runtime_id(&id), Some(uid));
        assert_eq!(uid_of_runtime_id("k-short"), None);
        assert_eq!(uid_of_runtime_id("other"), None);
        let d = tempfile::tempdir().unwrap();
        assert!(load(d.path(), "web").is_none());
        let r = Record { attempt: 2, id: id.clone(), ..Default::default() };
        save(d.path(), "web", &r).unwrap();
        assert_eq!(load(d.path(), "web"), Some(r.clone()));
        assert!(terminated(d.path(), "web", &r).is_none());
        let files = instance(d.path(), "web", 2);
        std::fs::create_dir_all(&files.dir).unwrap();
        std::fs::write(files.exit_file(), r#"{"exitCode":3,"finishedAt":"t"}"#).unwrap();
        let t = terminated(d.path(), "web", &r).unwrap();
        assert_eq!((t.exit_code, t.reason.as_str()), (3, "Error"));
        assert_eq!(t.container_id, format!("runc://{id}"));
        assert!(files.log.ends_with("logs/web/2.log"));
    }
}
