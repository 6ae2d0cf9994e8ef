//! The data directory's layout file, `engine.layout`: how many shards the
//! directory was created with and how partitions are routed to them. Both
//! are fixed for the life of the directory, since each partition's data
//! lives in the shard its hash chose. docs/FORMAT.md describes the file.
//!
//! It is written once, atomically: to a temporary file, synced, renamed
//! into place, and the directory synced. A crash leaves either no layout
//! or a complete one.

use std::{
    fs::File,
    io::Write,
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

/// Name of the layout file in the data directory.
const FILE: &str = "engine.layout";
/// Name of the layout file while it is written.
const TMP: &str = "engine.layout.tmp";
/// First line of the file: the magic and the format version.
const MAGIC_LINE: &str = "corelog-layout 1";
/// The routing scheme of [`crate::shard_for`].
const ROUTING: &str = "fibonacci-multiply-shift";

/// Records the shard count on first open; refuses another count, or
/// another routing scheme, later.
pub(crate) fn check(dir: &Path, shards: usize) -> Result<()> {
    let path: PathBuf = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return write(dir, shards),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    // A version before the atomic write could leave the file empty if it
    // crashed on its first open, before any shard existed: that directory
    // holds nothing yet and is laid out anew.
    // (Or full of NULs: writeback can leave a file its length without its
    // data.)
    let blank = text
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .is_empty();
    if blank && !has_shard_dirs(dir)? {
        return write(dir, shards);
    }
    let found = parse(&text).map_err(|why| Error::Corrupted {
        path: path.clone(),
        position: 0,
        reason: why,
    })?;
    if found != shards {
        return Err(Error::ShardCountMismatch {
            dir: dir.to_path_buf(),
            found,
            configured: shards,
        });
    }
    Ok(())
}

/// The shard count the layout text records, or why it is not a layout.
/// Accepts the first format too: one line `shards=N` (routing as today).
fn parse(text: &str) -> std::result::Result<usize, String> {
    let mut lines = text.lines().map(str::trim);
    let first = lines.next().unwrap_or_default();
    let shards_line = if first == MAGIC_LINE {
        let shards = lines.next().unwrap_or_default();
        match lines.next() {
            Some(r) if r == format!("routing={ROUTING}") => {}
            other => {
                return Err(format!(
                    "routing scheme {other:?} is not this version's ({ROUTING})"
                ))
            }
        }
        shards
    } else if first.starts_with("corelog-layout ") {
        return Err(format!(
            "layout format {first:?} is not this version's ({MAGIC_LINE:?})"
        ));
    } else {
        first
    };
    shards_line
        .strip_prefix("shards=")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("expected `shards=N`, found {text:?}"))
}

/// Whether any shard directory exists in `dir`.
fn has_shard_dirs(dir: &Path) -> Result<bool> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list directory", dir, e))?;
        if entry.file_name().to_string_lossy().starts_with("shard-") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Writes the layout atomically: temporary file, fsync, rename, directory
/// fsync.
fn write(dir: &Path, shards: usize) -> Result<()> {
    let tmp = dir.join(TMP);
    let path = dir.join(FILE);
    let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(format!("{MAGIC_LINE}\nshards={shards}\nrouting={ROUTING}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_parse_and_anything_else_is_refused() {
        assert_eq!(
            parse("corelog-layout 1\nshards=4\nrouting=fibonacci-multiply-shift\n"),
            Ok(4)
        );
        assert_eq!(parse("shards=2\n"), Ok(2), "the first format");
        assert!(parse("corelog-layout 2\nshards=4\n").is_err());
        assert!(parse("corelog-layout 1\nshards=4\nrouting=modulo\n").is_err());
        assert!(parse("corelog-layout 1\nshards=0\nrouting=fibonacci-multiply-shift\n").is_err());
        assert!(parse("shards=").is_err());
        assert!(parse("").is_err());
    }
}
