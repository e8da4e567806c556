//! What a command that writes a file may replace: a regular file, or the regular file a
//! symbolic link points to, and nothing else. Outputs are written to a temp file and renamed
//! over the destination, and a rename replaces whatever is there: a device node such as
//! `/dev/full`, a FIFO, or the link itself.

use std::fs::FileType;
use std::io;
use std::path::{Path, PathBuf};

/// The path a temp-file-and-rename write of `path` renames onto: `path` itself when nothing or
/// a regular file is there, the file at the end of a chain of symbolic links (so a link stays a
/// link), and an error naming the kind for a folder, device, FIFO or socket.
pub fn replaceable_file(path: &Path) -> io::Result<PathBuf> {
    let mut target = path.to_path_buf();
    // Linux's own limit on symbolic links followed in one lookup.
    for _ in 0..40 {
        // Nothing there, or nothing this process can see (a file where a folder should be, no
        // permission): the write itself will say what stops it.
        let Ok(meta) = std::fs::symlink_metadata(&target) else {
            return Ok(target);
        };
        let ty = meta.file_type();
        if ty.is_file() {
            return Ok(target);
        }
        if ty.is_symlink() {
            let link = std::fs::read_link(&target)?;
            target = match target.parent() {
                Some(dir) => dir.join(link),
                None => link,
            };
            continue;
        }
        let what = if target == path {
            format!("it is {}", kind(&ty))
        } else {
            format!("it links to {}, {}", target.display(), kind(&ty))
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what}, not a regular file (pgan only replaces regular files)"),
        ));
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        "too many levels of symbolic links",
    ))
}

/// What a file that is not a regular one is, for messages.
pub fn kind(ty: &FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ty.is_fifo() {
            return "a FIFO";
        }
        if ty.is_char_device() {
            return "a character device";
        }
        if ty.is_block_device() {
            return "a block device";
        }
        if ty.is_socket() {
            return "a socket";
        }
    }
    if ty.is_dir() {
        "a folder"
    } else if ty.is_symlink() {
        "a symbolic link"
    } else if ty.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pgan-spec-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn regular_files_and_new_paths_are_replaced_links_followed_the_rest_refused() {
        let dir = temp_dir("output");
        let file = dir.join("a.png");
        assert_eq!(replaceable_file(&file).unwrap(), file, "nothing there yet");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(replaceable_file(&file).unwrap(), file);
        let err = replaceable_file(&dir).unwrap_err().to_string();
        assert!(
            err.starts_with("it is a folder, not a regular file"),
            "{err}"
        );
        #[cfg(unix)]
        {
            let link = dir.join("link.png");
            std::os::unix::fs::symlink("a.png", &link).unwrap();
            assert_eq!(replaceable_file(&link).unwrap(), dir.join("a.png"));
            let dangling = dir.join("dangling.png");
            std::os::unix::fs::symlink("new/b.png", &dangling).unwrap();
            assert_eq!(replaceable_file(&dangling).unwrap(), dir.join("new/b.png"));
            let device = dir.join("null");
            std::os::unix::fs::symlink("/dev/null", &device).unwrap();
            let err = replaceable_file(&device).unwrap_err().to_string();
            assert_eq!(
                err,
                "it links to /dev/null, a character device, not a regular file \
                 (pgan only replaces regular files)"
            );
            let fifo = dir.join("fifo");
            let made = std::process::Command::new("mkfifo").arg(&fifo).status();
            assert!(made.unwrap().success());
            let err = replaceable_file(&fifo).unwrap_err().to_string();
            assert!(err.starts_with("it is a FIFO"), "{err}");
            let looped = dir.join("loop");
            std::os::unix::fs::symlink("loop", &looped).unwrap();
            let err = replaceable_file(&looped).unwrap_err().to_string();
            assert_eq!(err, "too many levels of symbolic links");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
