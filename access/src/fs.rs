//! Files inside a container, done on its root filesystem from the node (through
//! `/proc/<pid>/root` of its init), without `docker exec` and without a shell.
//!
//! Every path is resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` against the
//! container's root: `..`, absolute symlinks and chains of them all stay inside it, and the
//! `/proc/<pid>/...` magic links that could lead out are refused. Paths under `/proc`, `/sys`
//! and `/dev` are refused outright. The last component of a path that is changed (created,
//! renamed, deleted) is never followed. Blocking: call from a blocking thread.

use base64::Engine as _;
use nix::errno::Errno;
use nix::fcntl::{openat2, renameat2, OFlag, OpenHow, RenameFlags, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{fchownat, unlinkat, Gid, Uid, UnlinkatFlags};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Largest read (the original's limit).
pub const MAX_READ: u64 = 10 * 1024 * 1024;
/// Largest write.
pub const MAX_WRITE: usize = ferry_common::runner_proto::FS_MAX_WRITE;
/// Most entries one listing returns.
pub const MAX_ENTRIES: usize = 1000;
const MAX_PATH: usize = 4096;
const FORBIDDEN: [&str; 3] = ["/proc", "/sys", "/dev"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FsError {
    #[error("{0}")]
    Invalid(String),
    #[error("Path not found: {0}")]
    NotFound(String),
    #[error("Permission denied: {0}")]
    Denied(String),
    #[error("{0}")]
    WrongKind(String),
    #[error("Already exists: {0}")]
    Exists(String),
    #[error("File too large. Maximum size is {MAX_WRITE} bytes.")]
    TooLarge,
    #[error("{0}")]
    Io(String),
}

impl FsError {
    /// The HTTP status the original answers with.
    pub fn status(&self) -> u16 {
        match self {
            FsError::Invalid(_) | FsError::WrongKind(_) => 400,
            FsError::NotFound(_) => 404,
            FsError::Denied(_) => 403,
            FsError::Exists(_) => 409,
            FsError::TooLarge => 413,
            FsError::Io(_) => 500,
        }
    }
}

fn errno(e: Errno, path: &str) -> FsError {
    match e {
        Errno::ENOENT => FsError::NotFound(path.to_string()),
        Errno::EACCES | Errno::EPERM => FsError::Denied(path.to_string()),
        Errno::ENOTDIR => FsError::WrongKind(format!("Not a directory: {path}")),
        Errno::EISDIR => FsError::WrongKind(format!("Is a directory: {path}")),
        Errno::EEXIST => FsError::Exists(path.to_string()),
        Errno::ENOTEMPTY => FsError::WrongKind(format!("Directory not empty: {path}")),
        // A link that would lead out of the container, or a magic link.
        Errno::EXDEV | Errno::ELOOP => {
            FsError::Denied(format!("{path} (leads outside the container)"))
        }
        Errno::ENAMETOOLONG => FsError::Invalid(format!("path too long: {path}")),
        other => FsError::Io(format!("{path}: {other}")),
    }
}

/// An absolute path, normalised (`.`, `..` and repeated `/` removed, `..` clamped at `/`),
/// not under `/proc`, `/sys` or `/dev`.
pub fn clean_path(raw: &str) -> Result<String, FsError> {
    if !raw.starts_with('/') {
        return Err(FsError::Invalid(format!("path must be absolute: {raw:?}")));
    }
    if raw.len() > MAX_PATH || raw.contains('\0') {
        return Err(FsError::Invalid("path: too long or contains NUL".into()));
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let path = format!("/{}", parts.join("/"));
    if FORBIDDEN
        .iter()
        .any(|f| path == *f || path.starts_with(&format!("{f}/")))
    {
        return Err(FsError::Denied(format!(
            "{path} (/proc, /sys and /dev are not served)"
        )));
    }
    Ok(path)
}

/// The parent directory and last component of a cleaned path (`None` for `/`).
fn split(path: &str) -> Option<(&str, &str)> {
    if path == "/" {
        return None;
    }
    let i = path.rfind('/')?;
    Some((if i == 0 { "/" } else { &path[..i] }, &path[i + 1..]))
}

/// Who files written into the container belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// The user and group of `user` (an image's `User`: empty for root, `uid`, `uid:gid`, a
/// name, `name:group`), looked up in the container's own `/etc/passwd` and `/etc/group`.
pub fn owner_of(root: &Root, user: &str) -> Owner {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let file = |path: &str| {
        read(root, path, "utf-8", 1 << 20)
            .ok()
            .and_then(|v| v["content"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let passwd = file("/etc/passwd");
    // name:x:uid:gid:...
    let field = |line: &str, i: usize| line.split(':').nth(i).and_then(|v| v.parse::<u32>().ok());
    let by_name = |name: &str| {
        passwd
            .lines()
            .find(|l| l.split(':').next() == Some(name))
            .map(|l| (field(l, 2), field(l, 3)))
    };
    let (uid, default_gid) = match u {
        "" => (Some(0), Some(0)),
        u => match u.parse::<u32>() {
            Ok(n) => (
                Some(n),
                passwd
                    .lines()
                    .find(|l| field(l, 2) == Some(n))
                    .and_then(|l| field(l, 3)),
            ),
            Err(_) => by_name(u).unwrap_or((None, None)),
        },
    };
    let gid = match g {
        None => default_gid,
        Some(g) => g.parse::<u32>().ok().or_else(|| {
            file("/etc/group")
                .lines()
                .find(|l| l.split(':').next() == Some(g))
                .and_then(|l| field(l, 2))
        }),
    };
    Owner {
        uid: uid.unwrap_or(0),
        gid: gid.or(uid).unwrap_or(0),
    }
}

/// A container's root filesystem, opened once per request.
pub struct Root {
    fd: OwnedFd,
}

impl Root {
    /// Opens `dir` (`/proc/<pid>/root`) as the root everything is resolved in.
    pub fn open(dir: &Path) -> Result<Root, FsError> {
        let fd = nix::fcntl::open(
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| errno(e, &dir.display().to_string()))?;
        // Safety: `open` returned a new descriptor that nothing else owns.
        Ok(Root {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn resolve(&self, path: &str, flags: OFlag, mode: Mode) -> Result<OwnedFd, FsError> {
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .mode(mode)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let fd = openat2(self.fd.as_raw_fd(), path, how).map_err(|e| errno(e, path))?;
        // Safety: a new descriptor, owned here alone.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// `path` (already cleaned) opened inside the root: a directory for the watcher.
    pub fn open_dir(&self, path: &str, flags: OFlag, mode: Mode) -> Result<OwnedFd, FsError> {
        self.resolve(path, flags | OFlag::O_DIRECTORY, mode)
    }

    /// The directory holding `path`'s last component, and that component.
    fn parent<'p>(&self, path: &'p str) -> Result<(OwnedFd, &'p str), FsError> {
        let (dir, name) = split(path).ok_or_else(|| {
            FsError::Invalid("the root directory itself cannot be changed".into())
        })?;
        let fd = self.resolve(dir, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())?;
        Ok((fd, name))
    }

    /// Metadata of `path` itself (a final symlink is not followed).
    fn lstat(&self, path: &str) -> Result<FileStat, FsError> {
        match split(path) {
            None => fstat(self.fd.as_raw_fd()).map_err(|e| errno(e, path)),
            Some(_) => {
                let (dir, name) = self.parent(path)?;
                fstatat(
                    Some(dir.as_raw_fd()),
                    name,
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| errno(e, path))
            }
        }
    }
}

fn kind(st: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFREG => "file",
        SFlag::S_IFLNK => "symlink",
        _ => "other",
    }
}

fn permissions(mode: u32) -> String {
    let mut s = String::with_capacity(9);
    for shift in [6, 3, 0] {
        let p = (mode >> shift) & 7;
        s.push(if p & 4 != 0 { 'r' } else { '-' });
        s.push(if p & 2 != 0 { 'w' } else { '-' });
        s.push(if p & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn mtime(st: &FileStat) -> String {
    ferry_common::time::format_ms(st.st_mtime.saturating_mul(1000))
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// `GET list`: the directory's entries, directories first, each by name.
pub fn list(root: &Root, raw: &str, show_hidden: bool) -> Result<Value, FsError> {
    let path = clean_path(raw)?;
    let fd = root.resolve(&path, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())?;
    let mut dir = nix::dir::Dir::from_fd(fd.as_raw_fd()).map_err(|e| errno(e, &path))?;
    // `Dir` closes the descriptor it was given: hand it over.
    std::mem::forget(fd);
    let dirfd = dir.as_raw_fd();
    let mut entries: Vec<(bool, String, Value)> = Vec::new();
    let mut truncated = false;
    for entry in dir.iter() {
        let entry = entry.map_err(|e| errno(e, &path))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "." || name == ".." || (!show_hidden && name.starts_with('.')) {
            continue;
        }
        if entries.len() >= MAX_ENTRIES {
            truncated = true;
            break;
        }
        let st = fstatat(
            Some(dirfd),
            entry.file_name(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        );
        let (k, size, m, perms) = match &st {
            Ok(st) => (
                kind(st),
                if kind(st) == "file" { st.st_size } else { -1 },
                mtime(st),
                permissions(st.st_mode),
            ),
            Err(_) => ("other", -1, String::new(), String::new()),
        };
        entries.push((
            k == "directory",
            name.clone(),
            json!({"name": name, "path": join(&path, &name), "type": k, "size": size,
                   "mtime": m, "permissions": perms}),
        ));
    }
    entries.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let parent = split(&path).map(|(d, _)| d.to_string());
    Ok(json!({
        "path": path,
        "entries": entries.into_iter().map(|e| e.2).collect::<Vec<_>>(),
        "parent": parent,
        "truncated": truncated,
    }))
}

/// `GET read`: at most `limit` bytes (10 MiB at most); `utf-8` falls back to `base64` for
/// bytes that are not text.
pub fn read(root: &Root, raw: &str, encoding: &str, limit: u64) -> Result<Value, FsError> {
    let path = clean_path(raw)?;
    let limit = limit.min(MAX_READ);
    let fd = root.resolve(&path, OFlag::O_RDONLY, Mode::empty())?;
    let st = fstat(fd.as_raw_fd()).map_err(|e| errno(e, &path))?;
    if kind(&st) == "directory" {
        return Err(FsError::WrongKind(format!("Cannot read directory: {path}")));
    }
    let mut file = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    (&mut file)
        .take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| FsError::Io(format!("{path}: {e}")))?;
    let truncated = (st.st_size as u64) > limit;
    let (content, used) = match (encoding, String::from_utf8(bytes)) {
        ("utf-8", Ok(text)) => (text, "utf-8"),
        (_, Ok(text)) => (
            base64::engine::general_purpose::STANDARD.encode(text.as_bytes()),
            "base64",
        ),
        (_, Err(e)) => (
            base64::engine::general_purpose::STANDARD.encode(e.as_bytes()),
            "base64",
        ),
    };
    let size = match used {
        "utf-8" => content.len(),
        _ => base64::engine::general_purpose::STANDARD
            .decode(&content)
            .map(|b| b.len())
            .unwrap_or(0),
    };
    Ok(
        json!({"path": path, "content": content, "encoding": used, "size": size,
              "truncated": truncated}),
    )
}

/// Creates each missing directory of `dir` (owned by `owner`).
fn make_dirs(root: &Root, dir: &str, owner: Owner) -> Result<(), FsError> {
    let mut at = String::new();
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        at.push('/');
        at.push_str(part);
        let (parent, name) = root.parent(&at)?;
        match mkdirat(
            Some(parent.as_raw_fd()),
            name,
            Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) => chown(&parent, name, owner, &at)?,
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(errno(e, &at)),
        }
    }
    Ok(())
}

fn chown(dir: &OwnedFd, name: &str, owner: Owner, path: &str) -> Result<(), FsError> {
    fchownat(
        Some(dir.as_raw_fd()),
        name,
        Some(Uid::from_raw(owner.uid)),
        Some(Gid::from_raw(owner.gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| errno(e, path))
}

/// `POST write`: the file's whole new content; a new file belongs to `owner`.
pub fn write(
    root: &Root,
    raw: &str,
    content: &[u8],
    create_parents: bool,
    owner: Owner,
) -> Result<Value, FsError> {
    let path = clean_path(raw)?;
    if content.len() > MAX_WRITE {
        return Err(FsError::TooLarge);
    }
    if create_parents {
        if let Some((dir, _)) = split(&path) {
            make_dirs(root, dir, owner)?;
        }
    }
    let (dir, name) = root.parent(&path)?;
    let create = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
    let how = |flags: OFlag| {
        // A mode only with O_CREAT: openat2 refuses one otherwise (EINVAL).
        let mode = if flags.contains(OFlag::O_CREAT) {
            Mode::from_bits_truncate(0o644)
        } else {
            Mode::empty()
        };
        OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .mode(mode)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS)
    };
    let (fd, created) = match openat2(dir.as_raw_fd(), name, how(create)) {
        Ok(fd) => (fd, true),
        Err(Errno::EEXIST) => {
            let fd = openat2(
                dir.as_raw_fd(),
                name,
                how(OFlag::O_WRONLY | OFlag::O_TRUNC | OFlag::O_NOFOLLOW),
            )
            .map_err(|e| errno(e, &path))?;
            (fd, false)
        }
        Err(e) => return Err(errno(e, &path)),
    };
    // Safety: a new descriptor, owned here alone.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(content)
        .and_then(|()| file.sync_data())
        .map_err(|e| FsError::Io(format!("{path}: {e}")))?;
    if created {
        chown(&dir, name, owner, &path)?;
    }
    Ok(json!({"path": path, "size": content.len(), "success": true}))
}

/// `POST mkdir`.
pub fn mkdir(root: &Root, raw: &str, parents: bool, owner: Owner) -> Result<Value, FsError> {
    let path = clean_path(raw)?;
    if parents {
        make_dirs(root, &path, owner)?;
    } else {
        let (dir, name) = root.parent(&path)?;
        mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(0o755))
            .map_err(|e| errno(e, &path))?;
        chown(&dir, name, owner, &path)?;
    }
    Ok(json!({"message": format!("Directory created: {path}"), "path": path}))
}

/// `POST rename`.
pub fn rename(
    root: &Root,
    source: &str,
    destination: &str,
    overwrite: bool,
) -> Result<Value, FsError> {
    let src = clean_path(source)?;
    let dst = clean_path(destination)?;
    let (sdir, sname) = root.parent(&src)?;
    let (ddir, dname) = root.parent(&dst)?;
    let flags = if overwrite {
        RenameFlags::empty()
    } else {
        RenameFlags::RENAME_NOREPLACE
    };
    renameat2(
        Some(sdir.as_raw_fd()),
        sname,
        Some(ddir.as_raw_fd()),
        dname,
        flags,
    )
    .map_err(|e| match e {
        Errno::EEXIST => FsError::Exists(dst.clone()),
        Errno::ENOENT => FsError::NotFound(src.clone()),
        other => errno(other, &src),
    })?;
    Ok(json!({"message": format!("Renamed {src} to {dst}"), "source": src, "destination": dst}))
}

/// Names of the directories right inside the directory `fd` (links are not directories).
pub fn subdirectories(fd: &OwnedFd) -> Vec<String> {
    let Ok(dup) = nix::unistd::dup(fd.as_raw_fd()) else {
        return Vec::new();
    };
    let Ok(mut dir) = nix::dir::Dir::from_fd(dup) else {
        return Vec::new();
    };
    dir.iter()
        .filter_map(Result::ok)
        .filter(|e| matches!(e.file_type(), Some(nix::dir::Type::Directory)))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "." && n != "..")
        .collect()
}

/// The directory `name` right inside `dir`, never through a link.
fn open_subdir<P: ?Sized + nix::NixPath>(
    dir: &OwnedFd,
    name: &P,
    path: &str,
) -> Result<OwnedFd, FsError> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    let fd = openat2(dir.as_raw_fd(), name, how).map_err(|e| errno(e, path))?;
    // Safety: a new descriptor, owned here alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Removes everything inside the directory `fd` (links removed, never followed).
fn empty_dir(fd: &OwnedFd, path: &str) -> Result<(), FsError> {
    let dup = nix::unistd::dup(fd.as_raw_fd()).map_err(|e| errno(e, path))?;
    let mut dir = nix::dir::Dir::from_fd(dup).map_err(|e| errno(e, path))?;
    let names: Vec<(std::ffi::CString, bool)> = dir
        .iter()
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name().to_bytes();
            n != b"." && n != b".."
        })
        .map(|e| {
            let is_dir = matches!(e.file_type(), Some(nix::dir::Type::Directory));
            (e.file_name().to_owned(), is_dir)
        })
        .collect();
    for (name, is_dir) in names {
        let child = format!("{path}/{}", name.to_string_lossy());
        if is_dir {
            let sub = open_subdir(fd, name.as_c_str(), &child)?;
            empty_dir(&sub, &child)?;
            unlinkat(
                Some(fd.as_raw_fd()),
                name.as_c_str(),
                UnlinkatFlags::RemoveDir,
            )
            .map_err(|e| errno(e, &child))?;
        } else {
            unlinkat(
                Some(fd.as_raw_fd()),
                name.as_c_str(),
                UnlinkatFlags::NoRemoveDir,
            )
            .map_err(|e| errno(e, &child))?;
        }
    }
    Ok(())
}

/// `DELETE delete`: a file or link; a directory only with `recursive`.
pub fn delete(root: &Root, raw: &str, recursive: bool) -> Result<Value, FsError> {
    let path = clean_path(raw)?;
    let st = root.lstat(&path)?;
    let (dir, name) = root.parent(&path)?;
    if kind(&st) == "directory" {
        if !recursive {
            return Err(FsError::WrongKind(format!(
                "Cannot delete directory without recursive flag: {path}"
            )));
        }
        let fd = open_subdir(&dir, name, &path)?;
        empty_dir(&fd, &path)?;
        unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::RemoveDir)
            .map_err(|e| errno(e, &path))?;
    } else {
        unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| errno(e, &path))?;
    }
    Ok(json!({"message": format!("Deleted: {path}"), "path": path}))
}

/// `GET stat` (of the path itself: a symlink is reported as one).
pub fn stat(root: &Root, raw: &str) -> Result<Value, FsError> {
    let path = clean_path(raw)?;
    let st = root.lstat(&path)?;
    let k = kind(&st);
    Ok(json!({
        "path": path,
        "type": k,
        "size": st.st_size,
        "mtime": mtime(&st),
        "permissions": permissions(st.st_mode),
        "owner": st.st_uid.to_string(),
        "is_readable": true,
        "is_writable": true,
        "is_binary": false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        for (p, content) in files {
            let full = dir.path().join(p.trim_start_matches('/'));
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, content).unwrap();
        }
        let root = Root::open(dir.path()).unwrap();
        (dir, root)
    }

    const ME: Owner = Owner { uid: 0, gid: 0 };

    #[test]
    fn a_file_is_written_in_an_existing_directory_and_overwritten() {
        let (d, root) = root_with(&[("/root/.keep", "")]);
        write(&root, "/root/marker", b"one", true, ME).unwrap();
        write(&root, "/root/marker", b"two!", true, ME).unwrap();
        assert_eq!(
            std::fs::read(d.path().join("root/marker")).unwrap(),
            b"two!"
        );
    }

    #[test]
    fn the_image_user_is_looked_up_in_the_container() {
        let (_d, root) = root_with(&[
            (
                "/etc/passwd",
                "root:x:0:0::/root:/bin/sh\nann:x:1000:1001::/home/ann:/bin/sh\n",
            ),
            ("/etc/group", "root:x:0:\nstaff:x:50:\n"),
        ]);
        assert_eq!(owner_of(&root, ""), Owner { uid: 0, gid: 0 });
        assert_eq!(
            owner_of(&root, "ann"),
            Owner {
                uid: 1000,
                gid: 1001
            }
        );
        assert_eq!(
            owner_of(&root, "1000"),
            Owner {
                uid: 1000,
                gid: 1001
            }
        );
        assert_eq!(owner_of(&root, "ann:staff"), Owner { uid: 1000, gid: 50 });
        assert_eq!(
            owner_of(&root, "2000:3000"),
            Owner {
                uid: 2000,
                gid: 3000
            }
        );
        assert_eq!(
            owner_of(&root, "2000"),
            Owner {
                uid: 2000,
                gid: 2000
            }
        );
    }

    #[test]
    fn paths_are_cleaned_and_system_trees_refused() {
        assert_eq!(clean_path("/a/./b//c/../d").unwrap(), "/a/b/d");
        assert_eq!(clean_path("/../../etc/shadow").unwrap(), "/etc/shadow");
        assert!(clean_path("relative").is_err());
        assert!(clean_path("/proc/self/root/etc").is_err());
        assert!(clean_path("/a/../sys/kernel").is_err());
        assert!(clean_path("/dev").is_err());
        assert!(clean_path("/devices").is_ok());
    }

    #[test]
    fn round_trips_binary_and_text_and_lists() {
        let (_d, root) = root_with(&[("/etc/hostname", "box\n")]);
        let bytes: Vec<u8> = (0..=255).cycle().take(70_000).collect();
        write(&root, "/work/data.bin", &bytes, true, ME).unwrap();
        let v = read(&root, "/work/data.bin", "utf-8", MAX_READ).unwrap();
        assert_eq!(v["encoding"], "base64", "binary falls back to base64");
        let back = base64::engine::general_purpose::STANDARD
            .decode(v["content"].as_str().unwrap())
            .unwrap();
        assert_eq!(back, bytes);
        assert_eq!(
            read(&root, "/etc/hostname", "utf-8", 100).unwrap()["content"],
            "box\n"
        );
        let cut = read(&root, "/etc/hostname", "utf-8", 2).unwrap();
        assert_eq!(
            (cut["content"].as_str(), cut["truncated"].as_bool()),
            (Some("bo"), Some(true))
        );
        mkdir(&root, "/work/sub", false, ME).unwrap();
        let l = list(&root, "/work", false).unwrap();
        let names: Vec<&str> = l["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["sub", "data.bin"], "directories first");
        assert_eq!(l["parent"], "/");
        rename(&root, "/work/data.bin", "/work/sub/d.bin", false).unwrap();
        assert_eq!(stat(&root, "/work/sub/d.bin").unwrap()["size"], 70_000);
        write(&root, "/work/other", b"x", false, ME).unwrap();
        assert!(matches!(
            rename(&root, "/work/other", "/work/sub/d.bin", false),
            Err(FsError::Exists(_))
        ));
        assert!(matches!(
            delete(&root, "/work", false),
            Err(FsError::WrongKind(_))
        ));
        delete(&root, "/work", true).unwrap();
        assert!(matches!(stat(&root, "/work"), Err(FsError::NotFound(_))));
        assert!(matches!(
            write(&root, "/a", &vec![0u8; MAX_WRITE + 1], false, ME),
            Err(FsError::TooLarge)
        ));
    }

    #[test]
    fn no_path_leads_out_of_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let marker = outside.path().join("marker");
        std::fs::write(&marker, "the node's own file").unwrap();
        let (d, root) = root_with(&[("/etc/shadow", "inside")]);
        let m = marker.display().to_string();
        let out_dir = outside.path().display().to_string();
        std::os::unix::fs::symlink("/", d.path().join("to-root")).unwrap();
        std::os::unix::fs::symlink(&out_dir, d.path().join("to-outside")).unwrap();
        std::os::unix::fs::symlink("../../../../..", d.path().join("up")).unwrap();
        std::os::unix::fs::symlink("/to-outside/marker", d.path().join("chain")).unwrap();
        // Each resolves inside the root: the node's marker is never reached.
        for p in [
            format!("/to-root{m}"),
            "/to-outside/marker".to_string(),
            format!("/up{m}"),
            "/chain".to_string(),
            format!("/../../..{m}"),
        ] {
            assert!(read(&root, &p, "utf-8", 100).is_err(), "{p} read something");
            let _ = write(&root, &p, b"changed", true, ME);
            let _ = delete(&root, &p, true);
        }
        assert_eq!(
            std::fs::read_to_string(&marker).unwrap(),
            "the node's own file"
        );
        // `..` and absolute links are the container's own: /etc/shadow is its file.
        assert_eq!(
            read(&root, "/to-root/etc/shadow", "utf-8", 100).unwrap()["content"],
            "inside"
        );
        assert_eq!(
            read(&root, "/up/etc/shadow", "utf-8", 100).unwrap()["content"],
            "inside"
        );
        // Deleting a link removes the link, not what it points at.
        delete(&root, "/to-root", false).unwrap();
        assert_eq!(
            read(&root, "/etc/shadow", "utf-8", 100).unwrap()["content"],
            "inside"
        );
    }
}
