//! The tokio runtime of the example engines, from their `--threads` flag.

/// One thread: a current-thread runtime (no work-stealing machinery, no
/// cross-thread wakeups); more: the multi-thread scheduler with that many
/// workers; none: one worker per CPU.
pub fn build(threads: Option<u16>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(usize::from(n));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build()
}
