//! The two things the lanes need from the OS about the calling thread: how
//! much CPU it has used, and a lower scheduling priority.

/// CPU time the calling thread has used, in nanoseconds.
pub(crate) fn cpu_time_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write; this clock exists on
    // every Unix Sessionbox builds for.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    debug_assert_eq!(status, 0, "CLOCK_THREAD_CPUTIME_ID is always readable");
    (now.tv_sec as u64) * 1_000_000_000 + now.tv_nsec as u64
}

/// Lowers the calling thread's priority to `nice` (0 is the default, 19 the
/// lowest): while threads of normal priority want the CPU, this one gets
/// little of it. On Linux the nice value belongs to the thread, not the
/// process. Failing to lower it changes nothing but fairness, so a failure
/// is only traced.
pub(crate) fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls on the calling thread.
        let outcome = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
        };
        if outcome != 0 {
            tracing::warn!(
                "could not lower a slow-lane thread's priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cpu_time_grows_with_work_and_not_with_sleep() {
        let before = cpu_time_ns();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let slept = cpu_time_ns() - before;
        let mut x = 0u64;
        let began = std::time::Instant::now();
        while began.elapsed() < std::time::Duration::from_millis(20) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let worked = cpu_time_ns() - before - slept;
        assert!(slept < 5_000_000, "sleeping used {slept} ns of CPU");
        assert!(worked > 10_000_000, "20 ms of work counted {worked} ns");
    }
}
