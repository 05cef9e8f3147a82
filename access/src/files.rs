//! The file routes' operations as both daemons take them (`/api/fs/{task_id}/<op>` on the
//! runner, `/api/fs/container/{name}/<op>` on the host): parsed from the query or the JSON
//! body with the original's fields and defaults, checked (a 422 names the field), then run by
//! [`crate::fs`] on a container's root in a blocking thread.

use crate::fs::{self, FsError, Owner, Root};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;

/// A refused or failed operation: the HTTP status and the detail naming the field or path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub detail: String,
}

impl Refused {
    fn new(status: u16, detail: String) -> Refused {
        Refused { status, detail }
    }
}

impl From<FsError> for Refused {
    fn from(e: FsError) -> Refused {
        Refused::new(e.status(), e.to_string())
    }
}

/// One file operation, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOp {
    List {
        path: String,
        show_hidden: bool,
    },
    Read {
        path: String,
        encoding: String,
        limit: u64,
    },
    Stat {
        path: String,
    },
    Delete {
        path: String,
        recursive: bool,
    },
    Write {
        path: String,
        content: Vec<u8>,
        create_parents: bool,
    },
    Mkdir {
        path: String,
        parents: bool,
    },
    Rename {
        source: String,
        destination: String,
        overwrite: bool,
    },
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default = "root_path")]
    path: String,
    #[serde(default)]
    show_hidden: bool,
}

#[derive(Deserialize)]
struct PathQuery {
    path: String,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    recursive: bool,
}

#[derive(Deserialize)]
struct WriteBody {
    path: String,
    content: String,
    #[serde(default = "utf8")]
    encoding: String,
    #[serde(default = "yes")]
    create_parents: bool,
}

#[derive(Deserialize)]
struct MkdirBody {
    path: String,
    #[serde(default = "yes")]
    parents: bool,
}

#[derive(Deserialize)]
struct RenameBody {
    source: String,
    destination: String,
    #[serde(default)]
    overwrite: bool,
}

fn root_path() -> String {
    "/".into()
}

fn utf8() -> String {
    "utf-8".into()
}

fn yes() -> bool {
    true
}

fn query<T: serde::de::DeserializeOwned>(raw: &str) -> Result<T, Refused> {
    serde_urlencoded::from_str(raw).map_err(|e| Refused::new(422, format!("query: {e}")))
}

fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Refused> {
    serde_json::from_slice(bytes).map_err(|e| Refused::new(422, format!("body: {e}")))
}

fn encoding(e: &str) -> Result<(), Refused> {
    match e {
        "utf-8" | "base64" => Ok(()),
        other => Err(Refused::new(
            422,
            format!("encoding: 'utf-8' or 'base64', got {other:?}"),
        )),
    }
}

impl FileOp {
    /// The operation `op` (the path's last segment) from the query string or the body.
    pub fn parse(op: &str, raw_query: &str, bytes: &[u8]) -> Result<FileOp, Refused> {
        Ok(match op {
            "list" => {
                let q: ListQuery = query(raw_query)?;
                FileOp::List {
                    path: q.path,
                    show_hidden: q.show_hidden,
                }
            }
            "read" => {
                let q: PathQuery = query(raw_query)?;
                let encoding_name = q.encoding.unwrap_or_else(utf8);
                encoding(&encoding_name)?;
                FileOp::Read {
                    path: q.path,
                    encoding: encoding_name,
                    limit: q.limit.unwrap_or(fs::MAX_READ),
                }
            }
            "stat" => FileOp::Stat {
                path: query::<PathQuery>(raw_query)?.path,
            },
            "delete" => {
                let q: PathQuery = query(raw_query)?;
                FileOp::Delete {
                    path: q.path,
                    recursive: q.recursive,
                }
            }
            "write" => {
                let b: WriteBody = body(bytes)?;
                encoding(&b.encoding)?;
                let content = match b.encoding.as_str() {
                    "base64" => base64::engine::general_purpose::STANDARD
                        .decode(b.content.as_bytes())
                        .map_err(|e| Refused::new(400, format!("content: invalid base64: {e}")))?,
                    _ => b.content.into_bytes(),
                };
                if content.len() > fs::MAX_WRITE {
                    return Err(FsError::TooLarge.into());
                }
                FileOp::Write {
                    path: b.path,
                    content,
                    create_parents: b.create_parents,
                }
            }
            "mkdir" => {
                let b: MkdirBody = body(bytes)?;
                FileOp::Mkdir {
                    path: b.path,
                    parents: b.parents,
                }
            }
            "rename" => {
                let b: RenameBody = body(bytes)?;
                FileOp::Rename {
                    source: b.source,
                    destination: b.destination,
                    overwrite: b.overwrite,
                }
            }
            other => return Err(Refused::new(404, format!("no file operation {other:?}"))),
        })
    }

    /// Whether it changes the container's files.
    pub fn writes(&self) -> bool {
        matches!(
            self,
            FileOp::Delete { .. }
                | FileOp::Write { .. }
                | FileOp::Mkdir { .. }
                | FileOp::Rename { .. }
        )
    }

    fn run(self, root: &Root, owner: Owner) -> Result<Value, FsError> {
        match self {
            FileOp::List { path, show_hidden } => fs::list(root, &path, show_hidden),
            FileOp::Read {
                path,
                encoding,
                limit,
            } => fs::read(root, &path, &encoding, limit),
            FileOp::Stat { path } => fs::stat(root, &path),
            FileOp::Delete { path, recursive } => fs::delete(root, &path, recursive),
            FileOp::Write {
                path,
                content,
                create_parents,
            } => fs::write(root, &path, &content, create_parents, owner),
            FileOp::Mkdir { path, parents } => fs::mkdir(root, &path, parents, owner),
            FileOp::Rename {
                source,
                destination,
                overwrite,
            } => fs::rename(root, &source, &destination, overwrite),
        }
    }

    /// Runs on the container root `dir` (as this machine sees it), new files owned by the
    /// image's `user`, in a blocking thread.
    pub async fn run_on(self, dir: PathBuf, user: String) -> Result<Value, Refused> {
        let done = tokio::task::spawn_blocking(move || {
            let root = Root::open(&dir)?;
            let owner = fs::owner_of(&root, &user);
            self.run(&root, owner)
        })
        .await;
        match done {
            Ok(r) => r.map_err(Refused::from),
            Err(e) => Err(Refused::new(500, format!("file operation failed: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_take_the_originals_fields_and_defaults_and_name_what_is_wrong() {
        assert_eq!(
            FileOp::parse("list", "", b"").unwrap(),
            FileOp::List {
                path: "/".into(),
                show_hidden: false
            }
        );
        assert_eq!(
            FileOp::parse("read", "path=%2Fa&encoding=base64", b"").unwrap(),
            FileOp::Read {
                path: "/a".into(),
                encoding: "base64".into(),
                limit: fs::MAX_READ
            }
        );
        let e = FileOp::parse("read", "path=/a&encoding=latin1", b"").unwrap_err();
        assert_eq!((e.status, e.detail.starts_with("encoding:")), (422, true));
        let e = FileOp::parse("stat", "", b"").unwrap_err();
        assert_eq!(e.status, 422);
        let w = FileOp::parse(
            "write",
            "",
            br#"{"path":"/x","content":"aGk=","encoding":"base64"}"#,
        )
        .unwrap();
        assert_eq!(
            w,
            FileOp::Write {
                path: "/x".into(),
                content: b"hi".to_vec(),
                create_parents: true
            }
        );
        assert!(w.writes());
        let e = FileOp::parse(
            "write",
            "",
            br#"{"path":"/x","content":"!","encoding":"base64"}"#,
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        let e = FileOp::parse("rename", "", b"{}").unwrap_err();
        assert!(e.detail.starts_with("body:"), "{e:?}");
        assert_eq!(FileOp::parse("chmod", "", b"").unwrap_err().status, 404);
    }
}
