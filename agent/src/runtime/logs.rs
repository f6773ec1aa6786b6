//! Size-rotated log files: `stdout.log`, then `stdout.log.1` (older) up to
//! `stdout.log.<keep>`, and a reader that prints and follows them.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Appends to `path`, rotating when it would grow past `max_bytes`.
#[derive(Debug)]
pub struct RotatingWriter {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: File,
    size: u64,
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl RotatingWriter {
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(1024),
            keep,
            file,
            size,
        })
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if self.keep == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        for n in (1..self.keep).rev() {
            let from = rotated(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, n + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        self.file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }

    pub fn write_all(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            if self.size >= self.max_bytes {
                self.rotate()?;
            }
            let room = usize::try_from(self.max_bytes - self.size).unwrap_or(usize::MAX);
            let n = data.len().min(room);
            self.file.write_all(&data[..n])?;
            self.size += n as u64;
            data = &data[n..];
        }
        Ok(())
    }
}

/// The files of one log, oldest first.
pub fn files(path: &Path, keep: u32) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = (1..=keep.max(16))
        .rev()
        .map(|n| rotated(path, n))
        .filter(|p| p.exists())
        .collect();
    if path.exists() {
        out.push(path.to_path_buf());
    }
    out
}

/// Copies every file of the log to `out`, oldest first.
pub fn print(path: &Path, out: &mut impl Write) -> std::io::Result<()> {
    for file in files(path, 16) {
        let mut f = File::open(&file)?;
        std::io::copy(&mut f, out)?;
    }
    Ok(())
}

/// Follows the current files of several logs, writing new data as it
/// arrives, until `done()` returns true (checked between polls).
pub fn follow(
    paths: &[PathBuf],
    out: &mut impl Write,
    mut done: impl FnMut() -> bool,
) -> std::io::Result<()> {
    let mut offsets: Vec<(u64, u64)> = paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .map(|m| (ino(&m), m.len()))
                .unwrap_or((0, 0))
        })
        .collect();
    let mut buf = vec![0u8; 64 * 1024];
    let mut finishing = false;
    loop {
        let mut any = false;
        for (path, (inode, offset)) in paths.iter().zip(offsets.iter_mut()) {
            let Ok(md) = std::fs::metadata(path) else {
                continue;
            };
            if ino(&md) != *inode || md.len() < *offset {
                // Rotated: finish the old file is not possible by name, start the new one.
                *inode = ino(&md);
                *offset = 0;
            }
            if md.len() > *offset {
                let mut f = File::open(path)?;
                f.seek(SeekFrom::Start(*offset))?;
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    out.write_all(&buf[..n])?;
                    *offset += n as u64;
                }
                out.flush()?;
                any = true;
            }
        }
        if !any {
            if finishing {
                return Ok(());
            }
            if done() {
                // One more pass: output written just before the end.
                finishing = true;
                continue;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

fn ino(md: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_rotate_by_size_and_read_back_in_order() {
        let dir = std::env::temp_dir().join(format!("strata-logs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("stdout.log");
        let mut w = RotatingWriter::open(&path, 1024, 2).expect("open");
        for i in 0..80 {
            w.write_all(
                format!(
                    "line {i:03} ............................................................\n"
                )
                .as_bytes(),
            )
            .expect("write");
        }
        let names: Vec<String> = files(&path, 2)
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["stdout.log.2", "stdout.log.1", "stdout.log"]);
        let mut out = Vec::new();
        print(&path, &mut out).expect("print");
        let text = String::from_utf8(out).expect("utf8");
        // Only the newest three files are kept and they read back in order.
        assert!(
            text.ends_with(
                "line 079 ............................................................\n"
            )
        );
        assert!(!text.contains("line 000"));
        assert!(text.len() <= 3 * 1024);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
