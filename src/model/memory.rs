//! Process-wide allocator settings for training on the CPU.

/// Makes glibc's malloc keep freed memory for reuse. A training step allocates and frees
/// many activation, column and gradient buffers of up to tens of MB. By default glibc
/// serves those above its (adaptive, at most 32 MiB) mmap threshold with fresh mappings,
/// and trims the heap's top once 128 KiB or more lies free there. Either way the
/// buffers go back to the kernel and are page-faulted and zeroed in again at the next
/// step. Here the threshold is pinned at its maximum, trimming waits until 1 GiB is
/// free and the heap grows in 256 MiB steps; the memory itself stays where it was
/// (`mallopt(3)`). Call it once, at start-up; elsewhere than Linux with glibc it does
/// nothing.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's tunables; called before the process's
    // allocation-heavy work, as its manual page advises.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}
