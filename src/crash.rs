//! A panic ends the process. Left to tokio, a panicking task dies alone: the loops that
//! wait for it wait forever while `/healthz` answers 200, and no orchestrator restarts a
//! process that looks healthy. Nothing is lost by exiting at once: no offset has moved past
//! a record whose outcome is not durable, so whatever was in flight is consumed again.

use std::panic::PanicHookInfo;

use crate::app::EXIT_FATAL;

/// Installs the hook: the panic is logged (through `tracing`, as one event), then the
/// process exits with code 1 ([`EXIT_FATAL`]).
pub fn exit_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(
            panic = %message(info),
            location = %info.location().map_or_else(String::new, ToString::to_string),
            thread = std::thread::current().name().unwrap_or("unnamed"),
            "a task panicked; exiting so that the process is restarted"
        );
        // Also on stderr, in case logging itself is what panicked.
        eprintln!("mparticle-forwarder: panic: {}; exiting", message(info));
        std::process::exit(i32::from(EXIT_FATAL));
    }));
}

fn message<'a>(info: &'a PanicHookInfo<'_>) -> &'a str {
    info.payload()
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::Duration;

    /// Set in the child process that [`a_panicking_task_ends_the_process_with_exit_1`] runs.
    const CHILD: &str = "MPF_CRASH_TEST_CHILD";

    #[test]
    fn a_panicking_task_ends_the_process_with_exit_1() {
        if std::env::var_os(CHILD).is_some() {
            // The child: a runtime whose task panics while the main loop waits for good.
            super::exit_on_panic();
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                tokio::spawn(async { panic!("delivery task gave up") });
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
            return;
        }
        let started = std::time::Instant::now();
        let output = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash::tests::a_panicking_task_ends_the_process_with_exit_1",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "exited at once"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("panic: delivery task gave up; exiting"),
            "{stderr}"
        );
    }
}
