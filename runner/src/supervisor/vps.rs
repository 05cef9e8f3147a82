//! What a VPS adds to the task lifecycle: its container's command and published port by SSH
//! mode, the files written into it before it starts (host key, the caller's public key,
//! `/run/sshd`), the port it is reached on, stopping it (with a snapshot first), and its
//! snapshots (taken, listed, pruned, restored on the next create).
//!
//! Nothing is installed in the container and no shell line is built: the image must bring its
//! own sshd, and keys are files written through the engine.

use super::{Supervisor, SupervisorError};
use crate::workload::{FileEntry, SnapshotImage, WorkloadError, WorkloadSpec};
use ferry_common::task::{SshKeyMode, VpsSpec};
use ferry_common::time::format_ms;
use ferry_common::{snapshot_repository, TaskId};
use serde::Serialize;
use std::time::Duration;

/// Where the image's OpenSSH server must be (Debian, Ubuntu, Alpine, Fedora; merged-/usr
/// systems such as Arch resolve it through the `/usr/sbin` link).
pub const SSHD_PATH: &str = "/usr/sbin/sshd";
const HOST_KEY_PATH: &str = "/etc/ssh/ssh_host_ed25519_key";
const SSH_PORT: u16 = 22;

/// The container's command and published ports for `vps`.
pub fn shape(spec: &mut WorkloadSpec, vps: &VpsSpec) {
    // Under the engine's init, so a stop's SIGTERM ends the session at once.
    spec.init = true;
    if vps.ssh_key_mode == SshKeyMode::Disabled {
        spec.cmd = vec!["tail".into(), "-f".into(), "/dev/null".into()];
        return;
    }
    let mut cmd: Vec<String> = vec![
        SSHD_PATH.into(),
        "-D".into(),
        "-e".into(),
        "-h".into(),
        HOST_KEY_PATH.into(),
    ];
    let options: &[&str] = match vps.ssh_key_mode {
        SshKeyMode::None => &[
            "PermitRootLogin=yes",
            "PasswordAuthentication=yes",
            "PermitEmptyPasswords=yes",
        ],
        _ => &[
            "PermitRootLogin=prohibit-password",
            "PasswordAuthentication=no",
            "KbdInteractiveAuthentication=no",
            "PubkeyAuthentication=yes",
            "AuthorizedKeysFile=.ssh/authorized_keys",
        ],
    };
    for o in options {
        cmd.push("-o".into());
        cmd.push((*o).into());
    }
    spec.cmd = cmd;
    spec.publish = vec![SSH_PORT];
}

/// Why a VPS cannot be made from its image.
pub fn no_sshd_message(image: &str) -> String {
    format!(
        "image: {image} has no OpenSSH server at {SSHD_PATH}; use an image with openssh-server \
         installed, or ssh_key_mode 'disabled' (terminal only)"
    )
}

/// `/etc/shadow` with root's password emptied (`none` mode), or `None` if it has no root line.
pub fn shadow_without_root_password(shadow: &str) -> Option<String> {
    let mut found = false;
    let lines: Vec<String> = shadow
        .lines()
        .map(|line| {
            let mut fields: Vec<&str> = line.split(':').collect();
            if fields.first() == Some(&"root") && fields.len() > 1 {
                found = true;
                fields[1] = "";
            }
            fields.join(":")
        })
        .collect();
    found.then(|| lines.join("\n") + "\n")
}

/// One snapshot as the API lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SnapshotInfo {
    /// The image reference, `kohakuriver-snapshot/vps-<id>:<timestamp>`.
    pub tag: String,
    pub task_id: TaskId,
    pub timestamp: i64,
    pub size: i64,
    pub created_at: String,
}

/// Snapshots newest first (the tag is the Unix second it was taken at).
pub fn newest_first(id: TaskId, images: Vec<SnapshotImage>) -> Vec<SnapshotInfo> {
    let repository = snapshot_repository(id);
    let mut list: Vec<SnapshotInfo> = images
        .into_iter()
        .filter_map(|img| {
            let timestamp = img.tag.parse::<i64>().ok()?;
            Some(SnapshotInfo {
                tag: format!("{repository}:{}", img.tag),
                task_id: id,
                timestamp,
                size: img.size,
                created_at: format_ms(img.created.saturating_mul(1000)),
            })
        })
        .collect();
    list.sort_by_key(|s| std::cmp::Reverse(s.timestamp));
    list
}

/// The tag of a snapshot taken at `now_secs`: that second, or the first free one after the
/// newest existing tag, so two snapshots in one second never share (and overwrite) a tag.
pub fn next_tag(now_secs: i64, existing: &[SnapshotInfo]) -> i64 {
    let newest = existing
        .iter()
        .map(|s| s.timestamp)
        .max()
        .unwrap_or(i64::MIN);
    now_secs.max(newest.saturating_add(1))
}

impl Supervisor {
    /// Writes what the container's sshd needs before it starts: a host key (kept when a
    /// restored snapshot already has one), `/run/sshd`, and for `upload`/`generate` the
    /// public key as root's only authorized key, or for `none` an empty root password.
    pub(super) async fn prepare_vps(
        &self,
        name: &str,
        image: &str,
        vps: &VpsSpec,
    ) -> Result<(), String> {
        if vps.ssh_key_mode == SshKeyMode::Disabled {
            return Ok(());
        }
        let engine = &self.engine;
        match engine.path_exists(name, SSHD_PATH).await {
            Ok(true) => {}
            Ok(false) => return Err(no_sshd_message(image)),
            Err(e) => return Err(format!("cannot look into the container: {e}")),
        }
        let mut files = vec![FileEntry::dir("/run/sshd", 0o755)];
        let has_host_key = engine
            .path_exists(name, HOST_KEY_PATH)
            .await
            .map_err(|e| format!("cannot look into the container: {e}"))?;
        if !has_host_key {
            let pair = ferry_common::ssh::generate_ed25519(&format!("root@{name}"))
                .map_err(|e| e.to_string())?;
            files.push(FileEntry::dir("/etc/ssh", 0o755));
            files.push(FileEntry::file(HOST_KEY_PATH, 0o600, pair.private_openssh));
            files.push(FileEntry::file(
                &format!("{HOST_KEY_PATH}.pub"),
                0o644,
                pair.public_openssh + "\n",
            ));
        }
        match vps.ssh_key_mode {
            SshKeyMode::Upload | SshKeyMode::Generate => {
                let key = vps
                    .ssh_public_key
                    .as_deref()
                    .ok_or("ssh_public_key: required for this ssh_key_mode")?;
                let key = ferry_common::ssh::check_public_key(key)
                    .map_err(|e| format!("ssh_public_key: {e}"))?;
                files.push(FileEntry::dir("/root/.ssh", 0o700));
                files.push(FileEntry::file(
                    "/root/.ssh/authorized_keys",
                    0o600,
                    key + "\n",
                ));
            }
            SshKeyMode::None => {
                let shadow = engine
                    .read_file(name, "/etc/shadow", 1 << 20)
                    .await
                    .map_err(|e| format!("cannot read /etc/shadow: {e}"))?;
                let text = String::from_utf8_lossy(shadow.as_deref().unwrap_or_default());
                let edited = shadow_without_root_password(&text)
                    .unwrap_or_else(|| format!("{text}root::19000:0:99999:7:::\n"));
                files.push(FileEntry::file("/etc/shadow", 0o600, edited));
            }
            SshKeyMode::Disabled => {}
        }
        engine
            .write_files(name, &files)
            .await
            .map_err(|e| format!("cannot write the SSH set-up into the container: {e}"))
    }

    /// The node port of a started VPS's sshd (the engine may take a moment to publish it).
    pub(super) async fn ssh_port(&self, name: &str) -> Option<u16> {
        for _ in 0..20 {
            match self.engine.published_port(name, SSH_PORT).await {
                Ok(Some(port)) => return Some(port),
                Ok(None) => {}
                Err(WorkloadError::NotFound(_)) => return None,
                Err(e) => {
                    tracing::warn!(container = %name, error = %e, "cannot read the published SSH port")
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// The image a VPS starts from: its newest snapshot, if it has one on this node.
    pub(super) async fn restore_image(&self, id: TaskId) -> Option<String> {
        match self.list_snapshots(id).await {
            Ok(list) => list.into_iter().next().map(|s| s.tag),
            Err(e) => {
                tracing::warn!(task_id = %id, error = %e, "cannot list snapshots; starting from the image");
                None
            }
        }
    }

    pub async fn list_snapshots(&self, id: TaskId) -> Result<Vec<SnapshotInfo>, SupervisorError> {
        let images = self.engine.snapshots(&snapshot_repository(id)).await?;
        Ok(newest_first(id, images))
    }

    /// Snapshots a VPS of this runner; returns the new tag. Snapshots of one runner are taken
    /// one at a time, which keeps tags distinct; they never hold the task table.
    pub async fn snapshot(
        &self,
        id: TaskId,
        message: Option<&str>,
    ) -> Result<String, SupervisorError> {
        let name = self.vps_name(id)?;
        self.take_snapshot(id, &name, message).await
    }

    async fn take_snapshot(
        &self,
        id: TaskId,
        name: &str,
        message: Option<&str>,
    ) -> Result<String, SupervisorError> {
        let _one_at_a_time = self.snapshot_lock.lock().await;
        let existing = self.list_snapshots(id).await?;
        let now = ferry_common::time::now_ms() / 1000;
        let tag = next_tag(now, &existing).to_string();
        let message = match message {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => format!("VPS {id} snapshot at {tag}"),
        };
        let repository = snapshot_repository(id);
        self.engine
            .snapshot(name, &repository, &tag, &message)
            .await?;
        tracing::info!(task_id = %id, %tag, "snapshot taken");
        self.prune_snapshots(id).await;
        self.disk.changed();
        Ok(format!("{repository}:{tag}"))
    }

    /// Drops the oldest snapshots beyond `max_snapshots_per_vps`.
    async fn prune_snapshots(&self, id: TaskId) {
        let keep = self.config.max_snapshots_per_vps as usize;
        if keep == 0 {
            return;
        }
        let Ok(list) = self.list_snapshots(id).await else {
            return;
        };
        let repository = snapshot_repository(id);
        for old in list.iter().skip(keep) {
            let tag = old.timestamp.to_string();
            if let Err(e) = self.engine.remove_snapshot(&repository, &tag).await {
                tracing::warn!(task_id = %id, %tag, error = %e, "cannot remove an old snapshot");
            }
        }
    }

    /// Deletes one snapshot; `false` when there was none with that timestamp.
    pub async fn delete_snapshot(
        &self,
        id: TaskId,
        timestamp: i64,
    ) -> Result<bool, SupervisorError> {
        let list = self.list_snapshots(id).await?;
        if !list.iter().any(|s| s.timestamp == timestamp) {
            return Ok(false);
        }
        self.engine
            .remove_snapshot(&snapshot_repository(id), &timestamp.to_string())
            .await?;
        self.disk.changed();
        Ok(true)
    }

    /// Deletes every snapshot of a VPS; returns how many.
    pub async fn delete_all_snapshots(&self, id: TaskId) -> Result<usize, SupervisorError> {
        let list = self.list_snapshots(id).await?;
        let repository = snapshot_repository(id);
        for s in &list {
            self.engine
                .remove_snapshot(&repository, &s.timestamp.to_string())
                .await?;
        }
        self.disk.changed();
        Ok(list.len())
    }

    /// Stops a VPS: a snapshot first (when `snapshot_on_stop`), then SIGTERM with the grace
    /// period, then its removal; its final report is `stopped`. Waits (bounded) until it is
    /// gone.
    pub async fn stop(&self, id: TaskId) -> Result<(), SupervisorError> {
        let name = self.vps_name(id)?;
        let (mut done, phase) = self
            .table()
            .get(&id)
            .map(|e| (e.done.subscribe(), e.phase))
            .ok_or(SupervisorError::Unknown(id))?;
        if phase == super::Phase::Finished {
            return Ok(());
        }
        self.update_record(id, |r| r.stop_requested = true).await?;
        if self.config.snapshot_on_stop && phase != super::Phase::Preparing {
            match self
                .take_snapshot(id, &name, Some("Auto-snapshot on stop"))
                .await
            {
                Ok(_) => {}
                // The files are worth more than a prompt stop: say so, stop anyway.
                Err(e) => tracing::error!(task_id = %id, error = %e, "snapshot on stop failed"),
            }
        }
        // A paused container only handles SIGTERM once thawed.
        let _ = self.engine.resume(&name).await;
        match self.engine.stop(&name, self.config.vps_stop_grace).await {
            Ok(()) | Err(WorkloadError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let wait = self.config.vps_stop_grace + Duration::from_secs(10);
        let _ = tokio::time::timeout(wait, done.wait_for(|d| d.is_some())).await;
        Ok(())
    }

    /// The container name of a VPS this runner holds.
    fn vps_name(&self, id: TaskId) -> Result<String, SupervisorError> {
        let table = self.table();
        let e = table.get(&id).ok_or(SupervisorError::Unknown(id))?;
        if e.record.request.definition.spec.as_vps().is_none() {
            return Err(SupervisorError::WrongState(id, "not a VPS"));
        }
        Ok(ferry_common::vps_container_name(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mode_has_its_command_and_port() {
        let mut spec = WorkloadSpec::default();
        shape(&mut spec, &VpsSpec::default());
        assert_eq!(spec.cmd, vec!["tail", "-f", "/dev/null"]);
        assert!(spec.publish.is_empty() && spec.init);
        for (mode, password) in [
            (SshKeyMode::Upload, "PasswordAuthentication=no"),
            (SshKeyMode::Generate, "PasswordAuthentication=no"),
            (SshKeyMode::None, "PasswordAuthentication=yes"),
        ] {
            let mut spec = WorkloadSpec::default();
            shape(
                &mut spec,
                &VpsSpec {
                    ssh_key_mode: mode,
                    ..Default::default()
                },
            );
            assert_eq!(spec.cmd[0], SSHD_PATH);
            assert!(
                spec.cmd.iter().any(|a| a == password),
                "{mode}: {:?}",
                spec.cmd
            );
            assert_eq!(spec.publish, vec![22]);
        }
    }

    #[test]
    fn root_password_is_emptied_and_nothing_else_changes() {
        let shadow = "root:*:19000:0:99999:7:::\nsshd:*:19000:0:99999:7:::\n";
        assert_eq!(
            shadow_without_root_password(shadow).unwrap(),
            "root::19000:0:99999:7:::\nsshd:*:19000:0:99999:7:::\n"
        );
        assert_eq!(shadow_without_root_password("daemon:*:1::::::\n"), None);
    }

    #[test]
    fn snapshot_tags_are_distinct_within_one_second() {
        let at = |t: i64| SnapshotInfo {
            tag: format!("r:{t}"),
            task_id: TaskId(1),
            timestamp: t,
            size: 0,
            created_at: String::new(),
        };
        assert_eq!(next_tag(100, &[]), 100);
        assert_eq!(next_tag(100, &[at(90)]), 100);
        assert_eq!(next_tag(100, &[at(100)]), 101);
        assert_eq!(next_tag(100, &[at(100), at(101)]), 102);
        let listed = newest_first(
            TaskId(7),
            vec![
                SnapshotImage {
                    tag: "5".into(),
                    created: 5,
                    size: 1,
                },
                SnapshotImage {
                    tag: "junk".into(),
                    created: 0,
                    size: 1,
                },
                SnapshotImage {
                    tag: "9".into(),
                    created: 9,
                    size: 2,
                },
            ],
        );
        let tags: Vec<&str> = listed.iter().map(|s| s.tag.as_str()).collect();
        assert_eq!(
            tags,
            vec![
                "kohakuriver-snapshot/vps-7:9",
                "kohakuriver-snapshot/vps-7:5"
            ]
        );
    }
}
