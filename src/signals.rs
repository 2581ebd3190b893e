//! Ctrl-C / SIGTERM handling: the first signal asks for a graceful stop (agents drain), the
//! second aborts running steps, a third exits at once.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGINT/SIGTERM, `abort` on the second, and exits the process
/// on the third.
pub fn on_signals(token: CancellationToken, abort: CancellationToken) {
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!("cannot install signal handlers; stop with SIGKILL");
            return;
        };
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        eprintln!("stopping: finishing running steps (signal again to abort them)");
        token.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        eprintln!("second signal: aborting running steps (signal again to exit at once)");
        abort.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        eprintln!("third signal: exiting now");
        std::process::exit(130);
    });
}
