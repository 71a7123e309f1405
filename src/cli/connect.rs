//! The connection flags `pull`, `push` and `sync` share ([`RemoteArgs`],
//! [`RetryModeArgs`]), turned into library settings in one place so the
//! three commands cannot drift apart. No request is sent here.

use super::args::{RemoteArgs, RetryModeArgs};
use crate::replicate::RetryMode;
use crate::{Auth, RemoteConfig, RetryPolicy};
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

impl RemoteArgs {
    /// How requests authenticate: a token, a session, or basic auth.
    pub(crate) fn auth(&self) -> Auth {
        match (&self.token, self.session) {
            (Some(token), _) => Auth::Bearer(token.clone()),
            (None, true) => Auth::Session,
            (None, false) => Auth::Basic,
        }
    }

    /// The client settings these flags ask for.
    pub(crate) fn remote_config(&self) -> RemoteConfig {
        let mut config = RemoteConfig::default()
            .with_retry(RetryPolicy::with_retries(self.retries))
            .with_auth(self.auth())
            .with_connect_timeout(Duration::from_secs(self.connect_timeout))
            .with_request_timeout(Duration::from_secs(self.request_timeout))
            .with_max_response_bytes(self.max_response_mib.saturating_mul(MIB))
            .with_max_attachment_bytes(
                (self.max_attachment_mib > 0).then(|| self.max_attachment_mib.saturating_mul(MIB)),
            );
        config.read_timeout =
            (self.read_timeout > 0).then(|| Duration::from_secs(self.read_timeout));
        config
    }
}

impl RetryModeArgs {
    /// The retry mode asked for, if any.
    pub(crate) fn mode(&self) -> Option<RetryMode> {
        self.retry.then(|| {
            let mode = RetryMode::default();
            match self.retry_attempts {
                Some(n) => mode.with_max_attempts(n),
                None => mode,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::cli::args::Cli;
    use clap::Parser;

    #[test]
    fn pull_push_and_sync_take_the_same_connection_flags() {
        let flags = [
            "--session",
            "--retries",
            "2",
            "--connect-timeout",
            "3",
            "--request-timeout",
            "30",
            "--read-timeout",
            "0",
            "--max-response-mib",
            "8",
            "--max-attachment-mib",
            "0",
        ];
        let commands: [&[&str]; 3] = [
            &["settee", "pull", "http://h/db", "dir", "--retry"],
            &["settee", "push", "dir"],
            &["settee", "sync", "http://h", "root", "--db", "a", "--retry"],
        ];
        for command in commands {
            let argv: Vec<&str> = command.iter().chain(flags.iter()).copied().collect();
            let cli = Cli::try_parse_from(&argv).unwrap();
            let connect = match &cli.command {
                crate::cli::args::Command::Pull(a) => &a.connect,
                crate::cli::args::Command::Push(a) => &a.connect,
                crate::cli::args::Command::Sync(a) => &a.connect,
                _ => unreachable!(),
            };
            let c = connect.remote_config();
            assert_eq!(c.auth, crate::Auth::Session, "{argv:?}");
            assert_eq!(c.retry.max_retries, 2);
            assert_eq!(c.connect_timeout.as_secs(), 3);
            assert_eq!(c.request_timeout.as_secs(), 30);
            assert_eq!(c.read_timeout, None);
            assert_eq!(c.max_response_bytes, 8 << 20);
            assert_eq!(c.max_attachment_bytes, None);
        }
        let bad = ["settee", "push", "dir", "--session", "--token", "t"];
        assert!(
            Cli::try_parse_from(bad).is_err(),
            "session and token conflict"
        );
    }

    #[test]
    fn the_flag_defaults_are_the_library_defaults() {
        let cli = Cli::try_parse_from(["settee", "push", "dir"]).unwrap();
        let crate::cli::args::Command::Push(a) = &cli.command else {
            unreachable!()
        };
        let got = a.connect.remote_config();
        let want = crate::RemoteConfig::default();
        assert_eq!(got.connect_timeout, want.connect_timeout);
        assert_eq!(got.request_timeout, want.request_timeout);
        assert_eq!(got.read_timeout, want.read_timeout);
        assert_eq!(got.max_response_bytes, want.max_response_bytes);
        assert_eq!(got.max_attachment_bytes, want.max_attachment_bytes);
        assert_eq!(got.retry, want.retry);
    }
}
