//! The hidden `strata shim` and `strata shim-launcher` commands, which the
//! agent starts: one shim per task ([`crate::runtime::shim_main`]), one
//! launcher that forks them ([`crate::runtime::launcher`]). Both end the
//! process with their own exit code.

use std::path::Path;

/// `strata shim --task-dir DIR`: supervises one task's container.
pub fn shim(task_dir: &Path) -> anyhow::Result<()> {
    std::process::exit(crate::runtime::shim_main(task_dir))
}

/// `strata shim-launcher`: forks shims on the requests on its stdin.
pub fn launcher() -> anyhow::Result<()> {
    std::process::exit(crate::runtime::launcher::launcher_main())
}
