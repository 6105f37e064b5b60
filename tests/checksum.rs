//! The checksum example prints what `find DIR -type f | LC_ALL=C sort | xargs sha256sum`
//! prints, and reports unreadable files through failure routing.

// Pedantic lints this test allows, and why:
// - `cast_possible_truncation`: small counts and indices (thousands) fit the narrower type.
#![allow(clippy::cast_possible_truncation)]

#[allow(dead_code)]
#[path = "../examples/checksum.rs"]
mod checksum;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh directory under the system's temp dir, removed when dropped.
struct TempTree(PathBuf);

impl TempTree {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pipework-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempTree(dir)
    }

    fn file(&self, rel: &str, content: &[u8]) {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn generate(tree: &TempTree) {
    tree.file("empty", b"");
    tree.file("one", b"1");
    tree.file("a/b/c/deep.txt", b"deep file\n");
    tree.file("a/with space.txt", b"spaces in the name");
    tree.file("A-upper", b"upper case sorts first in C");
    // Enough files of varied sizes to keep every worker busy.
    for i in 0..200u32 {
        let content: Vec<u8> = (0..(i * 997) % 70_000)
            .map(|j| (j * 31 + i) as u8)
            .collect();
        tree.file(&format!("many/{:03}/{i}.bin", i % 7), &content);
    }
    #[cfg(unix)]
    std::os::unix::fs::symlink(tree.0.join("one"), tree.0.join("link-to-one")).unwrap();
}

fn ours(dir: &Path) -> (String, String, u8) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = checksum::run(dir, &mut out, &mut err);
    (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
        code,
    )
}

#[test]
fn smoke() {
    let tree = TempTree::new("smoke");
    tree.file("x", b"abc");
    let (out, err, code) = ours(&tree.0);
    assert_eq!(
        out,
        format!(
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  {}\n",
            tree.0.join("x").display()
        )
    );
    assert_eq!((err.as_str(), code), ("", 0));
}

#[test]
fn matches_find_sort_sha256sum() {
    let has_sha256sum = Command::new("sha256sum").arg("--version").output().is_ok();
    if !has_sha256sum {
        eprintln!("sha256sum not found: skipping the comparison");
        return;
    }
    let tree = TempTree::new("compare");
    generate(&tree);
    let script = format!(
        "find '{}' -type f | LC_ALL=C sort | tr '\\n' '\\0' | xargs -0 sha256sum",
        tree.0.display()
    );
    let theirs = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    assert!(
        theirs.status.success(),
        "{}",
        String::from_utf8_lossy(&theirs.stderr)
    );
    let theirs = String::from_utf8(theirs.stdout).unwrap();
    let (out, err, code) = ours(&tree.0);
    assert_eq!((err.as_str(), code), ("", 0));
    assert_eq!(out.lines().count(), 205);
    assert_eq!(out, theirs);
}

#[test]
fn unreadable_files_go_to_stderr_and_set_the_exit_code() {
    let tree = TempTree::new("unreadable");
    tree.file("good", b"fine");
    let missing = tree.0.join("vanished");
    let files = vec![tree.0.join("good"), missing.clone(), tree.0.join("good")];
    let mut out = Vec::new();
    let mut err = Vec::new();
    let failed = checksum::hash_files(files, &mut out, &mut err);
    assert_eq!(failed, 1);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(
        out.lines().count(),
        2,
        "the readable files are still hashed: {out}"
    );
    let err = String::from_utf8(err).unwrap();
    assert!(
        err.starts_with(&format!("checksum: {}: ", missing.display())),
        "{err}"
    );
}

/// A reader that takes `room` bytes, then goes away (a closed pipe).
struct Closes {
    room: usize,
}

impl std::io::Write for Closes {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.room == 0 {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_reader_that_goes_away_is_a_quiet_clean_stop() {
    let tree = TempTree::new("checksum-pipe");
    generate(&tree);
    for room in [0, 100, 10_000] {
        let mut err = Vec::new();
        let code = checksum::run(&tree.0, &mut Closes { room }, &mut err);
        assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
        assert!(err.is_empty(), "{}", String::from_utf8_lossy(&err));
    }
}

#[test]
fn piped_into_head_it_exits_zero_with_no_error_text() {
    // `cargo test` builds the examples next to the test binaries' directory.
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/checksum");
    assert!(bin.exists(), "{} was not built", bin.display());
    let tree = TempTree::new("checksum-head");
    generate(&tree);
    let script = format!(
        "set -o pipefail; '{}' '{}' 2>stderr.txt | head -1 >/dev/null",
        bin.display(),
        tree.0.display()
    );
    let status = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&tree.0)
        .status()
        .unwrap();
    let stderr = std::fs::read_to_string(tree.0.join("stderr.txt")).unwrap_or_default();
    assert!(status.success(), "exit {status:?}, stderr: {stderr}");
    assert!(stderr.is_empty(), "stderr: {stderr}");
}
