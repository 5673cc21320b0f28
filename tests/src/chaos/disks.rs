//! Disk faults: one node disk on a small filesystem of its own (an ext4 image on a loop device,
//! bind-mounted into the container) that can be filled up, and disks whose directory's
//! contents vanish and come back — as when a disk drops off its bus and is mounted again: what
//! the node wrote into the bare directory meanwhile is hidden again by the returning disk.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::hosts::sh;

/// The node and disk that live on the small filesystem.
pub const SMALL_DISK: (&str, &str) = ("n3", "/disk2");
/// Its size: a few runs' worth of shards, so that uploads alone come near filling it.
const SMALL_DISK_BYTES: u64 = 96 << 20;
/// What a fill leaves free.
const LEFT_FREE_BYTES: u64 = 64 << 10;
/// The image's user (owner of the disk's root).
const IMAGE_USER: &str = "65532:65532";
const FILLER: &str = ".chaos-filler";

/// The small filesystem, unmounted and removed when dropped.
#[derive(Debug)]
pub struct SmallDisk {
    image: PathBuf,
    mount: PathBuf,
}

impl SmallDisk {
    /// Makes and mounts it under `dir`.
    pub fn create(dir: &Path) -> SmallDisk {
        let disk = SmallDisk {
            image: dir.join("small-disk.img"),
            mount: dir.join("small-disk"),
        };
        std::fs::create_dir_all(&disk.mount).expect("mount point");
        let file = std::fs::File::create(&disk.image).expect("disk image");
        file.set_len(SMALL_DISK_BYTES).expect("disk image size");
        sh(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&disk.image));
        sh(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&disk.image)
            .arg(&disk.mount));
        sh(Command::new("chown").arg(IMAGE_USER).arg(&disk.mount));
        // lost+found is not the node's: a disk must be empty or carry its identity.
        let _ = std::fs::remove_dir(disk.mount.join("lost+found"));
        disk
    }

    pub fn mount_point(&self) -> &Path {
        &self.mount
    }

    /// Fills the filesystem but for [`LEFT_FREE_BYTES`].
    pub fn fill(&self) {
        let out = sh(Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.mount));
        let avail: u64 = out
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0);
        if avail > LEFT_FREE_BYTES {
            let len = (avail - LEFT_FREE_BYTES).to_string();
            sh(Command::new("fallocate")
                .args(["-l", &len])
                .arg(self.mount.join(FILLER)));
        }
    }

    /// Frees what [`SmallDisk::fill`] took.
    pub fn empty(&self) {
        let _ = std::fs::remove_file(self.mount.join(FILLER));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        for _ in 0..20 {
            let done = Command::new("umount")
                .arg(&self.mount)
                .output()
                .is_ok_and(|o| o.status.success());
            if done || !is_mounted(&self.mount) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        let _ = std::fs::remove_file(&self.image);
    }
}

fn is_mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(1) == path.to_str()))
}

/// Where a named volume's contents are on the host.
pub fn volume_dir(volume: &str) -> Option<PathBuf> {
    let out = Command::new("docker")
        .args(["volume", "inspect", "--format", "{{.Mountpoint}}", volume])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

/// The hidden places beside a disk's directory: its contents while gone, and what was
/// written into the bare directory meanwhile.
fn aside(dir: &Path) -> (PathBuf, PathBuf) {
    let parent = dir.parent().unwrap_or(dir);
    (
        parent.join("chaos-vanished"),
        parent.join("chaos-written-while-gone"),
    )
}

fn move_entries(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("aside directory");
    if let Ok(entries) = std::fs::read_dir(from) {
        for e in entries.flatten() {
            let target = to.join(e.file_name());
            if target.exists() {
                let _ = std::fs::remove_dir_all(&target).or_else(|_| std::fs::remove_file(&target));
            }
            std::fs::rename(e.path(), &target).expect("move a disk's entry aside");
        }
    }
}

/// Moves the disk directory's contents away (the directory stays, empty).
pub fn vanish(dir: &Path) {
    let (gone, _) = aside(dir);
    move_entries(dir, &gone);
}

/// Brings them back; whatever was written meanwhile is hidden again.
pub fn restore(dir: &Path) {
    let (gone, written) = aside(dir);
    if !gone.exists() {
        return;
    }
    move_entries(dir, &written);
    move_entries(&gone, dir);
    let _ = std::fs::remove_dir(&gone);
}
