//! Crafted input files (and a dead process id) shared by the tests of this crate, the crates
//! above it and the CLI's end-to-end tests.

/// The id of a process that has exited: what a killed writer's temp file is named after.
pub fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// A PNG whose header declares `w x h` pixels of `colour` (2 RGB, 6 RGBA) at `depth` bits,
/// followed by one tiny IDAT: a decompression bomb of a few hundred bytes.
pub fn bomb_png(w: u32, h: u32, colour: u8, depth: u8) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[depth, colour, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    // zlib stream of a few zero bytes (stored block): filter byte + a few pixels.
    chunk(
        &mut png,
        b"IDAT",
        &[
            0x78, 0x01, 0x01, 0x04, 0x00, 0xfb, 0xff, 0, 0, 0, 0, 0x00, 0x00, 0x00, 0x01,
        ],
    );
    chunk(&mut png, b"IEND", &[]);
    png
}

/// A folder that cannot be listed, even by root: nested folders under `root`, made relative to
/// each other, until the path of the last is longer than the system takes (PATH_MAX). Returns
/// that path.
pub fn unreadable_folder(root: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let name = "d".repeat(250);
    let c = std::ffi::CString::new(name.as_bytes()).unwrap();
    let root_c = std::ffi::CString::new(root.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid NUL-terminated paths; every descriptor opened is closed.
    unsafe {
        let mut fd = libc::open(root_c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
        assert!(fd >= 0);
        let mut path = root.to_path_buf();
        while path.as_os_str().len() <= libc::PATH_MAX as usize {
            assert_eq!(libc::mkdirat(fd, c.as_ptr(), 0o755), 0);
            let next = libc::openat(fd, c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
            assert!(next >= 0);
            libc::close(fd);
            fd = next;
            path.push(&name);
        }
        libc::close(fd);
        path
    }
}
