//! How the process heap treats memory it has freed.
//!
//! With glibc's defaults, malloc hands free memory back to the kernel once a few MiB of it sit at
//! the top of a heap, and it gives blocks above a moving threshold a mapping of their own. Ingest
//! frees and allocates megabytes per fetch: log reads, broker batches, Arrow builders. So the
//! kernel kept mapping and zeroing fresh pages for memory just returned, and page faults took
//! about a sixth of ingest's CPU time (BENCHMARKS.md, "the heap keeps freed memory").
//! [`keep_freed_memory`] fixes both thresholds, so freed memory is reused in place.

/// Blocks of this size and larger get a mapping of their own, returned to the kernel when freed.
const MMAP_THRESHOLD: usize = 4 << 20;
/// Free memory at the top of a heap goes back to the kernel only past this much.
const TRIM_THRESHOLD: usize = 256 << 20;
/// Set by operators to choose glibc's malloc settings themselves.
const TUNABLES: &str = "GLIBC_TUNABLES";

/// What [`keep_freed_memory`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeapTuning {
    /// The heap keeps up to [`TRIM_THRESHOLD`] free, and maps only blocks of [`MMAP_THRESHOLD`] up.
    Applied,
    /// `GLIBC_TUNABLES` sets malloc options, so they are left as the operator chose them.
    LeftToTunables,
    /// glibc refused the settings, or the process does not use glibc's malloc.
    Unsupported,
}

/// Makes the heap reuse freed memory instead of returning it to the kernel. It affects the whole
/// process, so it is called once, first thing in `main`.
pub fn keep_freed_memory() -> HeapTuning {
    keep_unless_chosen(std::env::var(TUNABLES).ok().as_deref())
}

fn keep_unless_chosen(tunables: Option<&str>) -> HeapTuning {
    if tunables.is_some_and(|t| t.contains("glibc.malloc.")) {
        return HeapTuning::LeftToTunables;
    }
    set_thresholds()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_thresholds() -> HeapTuning {
    let set = |option, value: usize| {
        let value = libc::c_int::try_from(value).expect("thresholds fit an int");
        // SAFETY: mallopt only reads its two integer arguments; glibc serialises it against
        // allocation itself. It returns 1 on success and 0 for a value it refuses.
        unsafe { libc::mallopt(option, value) == 1 }
    };
    if set(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) && set(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) {
        HeapTuning::Applied
    } else {
        HeapTuning::Unsupported
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> HeapTuning {
    HeapTuning::Unsupported
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_takes_both_thresholds_unless_the_operator_set_malloc_tunables() {
        assert_eq!(keep_unless_chosen(None), HeapTuning::Applied);
        assert_eq!(
            keep_unless_chosen(Some("glibc.pthread.rseq=0")),
            HeapTuning::Applied
        );
        assert_eq!(
            keep_unless_chosen(Some("glibc.malloc.arena_max=2")),
            HeapTuning::LeftToTunables
        );
    }
}
