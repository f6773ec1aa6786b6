//! What a node reports about its resources: CPUs, memory, the size of the
//! filesystem holding its state, and a few attributes.

use std::collections::BTreeMap;
use std::path::Path;

/// CPUs this process may use.
pub fn cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

/// Total memory from `/proc/meminfo`, in bytes.
pub fn memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo").map_or(0, |s| parse_meminfo_total(&s))
}

/// Parses `MemTotal:  16384 kB` into bytes.
pub fn parse_meminfo_total(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Size of the filesystem holding `path`, in bytes.
pub fn disk_bytes(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable
    // memory of the right size; statvfs only writes into it.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    // SAFETY: statvfs returned 0, so it filled the whole struct.
    let st = unsafe { st.assume_init() };
    st.f_blocks.saturating_mul(st.f_frsize)
}

/// Attributes every node reports.
pub fn attributes() -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert("arch".to_string(), std::env::consts::ARCH.to_string());
    if let Ok(k) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        a.insert("kernel".to_string(), k.trim().to_string());
    }
    a.insert("agent".to_string(), env!("CARGO_PKG_VERSION").to_string());
    a
}
