//! Opening a file of a tree that outside input made (an image's root
//! filesystem, an imported archive) without leaving the tree: `openat2`
//! with the tree as the root (`..` and absolute symbolic links resolve
//! inside it), no magic links, no other mount, without blocking (a FIFO
//! cannot hang the reader), and only a regular file.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};

/// Why [`open_regular`] gave no file.
#[derive(Debug, thiserror::Error)]
pub enum InRootError {
    #[error("cannot open it: {0}")]
    Open(io::Error),
    #[error("cannot read it: {0}")]
    Stat(io::Error),
    #[error("it is not a regular file")]
    NotRegular,
}

/// The regular file `rel` of the tree whose root directory is `root`.
pub fn open_regular(root: &impl AsRawFd, rel: &str) -> Result<File, InRootError> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_IN_ROOT
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    let fd =
        nix::fcntl::openat2(root.as_raw_fd(), rel, how).map_err(|e| InRootError::Open(e.into()))?;
    // SAFETY: `fd` was just returned by a successful openat2 call; nothing
    // else holds or closes it.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let md = file.metadata().map_err(InRootError::Stat)?;
    if !md.is_file() {
        return Err(InRootError::NotRegular);
    }
    Ok(file)
}
