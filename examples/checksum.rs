//! `checksum DIR`: the SHA-256 of every file under DIR, one `digest  path` line per file in
//! sorted path order — what `find DIR -type f | LC_ALL=C sort | xargs sha256sum` prints.
//!
//! Files are hashed on an ordered pool (one thread per core, each with its own read
//! buffer), so the output comes out sorted without collecting it. A file that cannot be read
//! is reported on stderr through failure routing, the others are still hashed, and the exit
//! code is 1.
//!
//! ```text
//! cargo run --release --example checksum -- ~/src
//! ```

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Mutex, PoisonError};

use pipework::{Failure, Ordered, Pipeline, StageOptions, runner, sink, try_map};
use sha2::{Digest, Sha256};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir] = args.as_slice() else {
        eprintln!("usage: checksum DIR");
        return ExitCode::from(2);
    };
    let stdout = io::stdout();
    let stderr = io::stderr();
    let code = run(Path::new(dir), &mut stdout.lock(), &mut stderr.lock());
    ExitCode::from(code)
}

/// Hashes every file under `dir`; returns the exit code.
pub fn run(dir: &Path, out: &mut impl Write, err: &mut impl Write) -> u8 {
    let mut files = Vec::new();
    let mut walk_errors = 0;
    walk(dir, &mut files, &mut |path, e| {
        walk_errors += 1;
        let _ = writeln!(err, "checksum: {}: {e}", path.display());
    });
    // `sort` in the C locale orders lines by bytes.
    files.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    let failed = hash_files(files, out, err);
    u8::from(walk_errors + failed > 0)
}

/// Hashes `files` in order, writing `digest  path` lines to `out` and one line per file that
/// could not be read to `err`; returns how many could not be read.
pub fn hash_files(files: Vec<PathBuf>, out: &mut impl Write, err: &mut impl Write) -> usize {
    // Files that cannot be read are set aside, with the reason, and the run goes on.
    let unreadable = Mutex::new(Vec::new());
    let pipeline = Pipeline::new().stage_with(
        "sha256",
        Ordered::with_init(runner::cores(), |_| {
            // Each worker reads through its own buffer.
            let mut buf = vec![0u8; 64 * 1024];
            Ok(try_map(move |path: PathBuf| -> io::Result<String> {
                let mut file = std::fs::File::open(&path)?;
                let mut hasher = Sha256::new();
                loop {
                    let n = file.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
                let digest = hasher.finalize();
                let hex = digest.iter().fold(String::new(), |mut hex, b| {
                    let _ = write!(hex, "{b:02x}");
                    hex
                });
                Ok(line(&hex, &path))
            }))
        }),
        StageOptions::new().route_failures_to(|f: Failure<PathBuf>| {
            let reason = f.error().to_string();
            let mut unreadable = unreadable.lock().unwrap_or_else(PoisonError::into_inner);
            unreadable.push((f.into_item(), reason));
        }),
    );
    // A reader that went away (`checksum DIR | head -1`) is a clean stop for `sink::lines`,
    // as for sha256sum and grep.
    let result = pipeline.run(files, sink::lines(&mut *out));
    drop(pipeline);
    let unreadable = unreadable
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    for (path, reason) in &unreadable {
        let _ = writeln!(err, "checksum: {}: {reason}", path.display());
    }
    let mut failed = unreadable.len();
    if let Err(e) = result {
        let _ = writeln!(err, "checksum: {e:#}");
        failed += 1;
    }
    failed
}

/// A line as sha256sum prints it: names with a backslash or a newline are escaped and the
/// line starts with a backslash.
fn line(hex: &str, path: &Path) -> String {
    let name = path.to_string_lossy();
    if name.contains(['\\', '\n', '\r']) {
        let escaped = name
            .replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\r', "\\r");
        format!("\\{hex}  {escaped}")
    } else {
        format!("{hex}  {name}")
    }
}

/// Collects every regular file under `dir`, like `find -type f` (symbolic links are not
/// followed).
fn walk(dir: &Path, files: &mut Vec<PathBuf>, on_error: &mut impl FnMut(&Path, io::Error)) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return on_error(dir, e),
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                on_error(dir, e);
                continue;
            }
        };
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(&path, files, on_error),
            Ok(t) if t.is_file() => files.push(path),
            Ok(_) => {}
            Err(e) => on_error(&path, e),
        }
    }
}
