//! `[access_log]`: where the one-line-per-request access log goes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{SettingsError, invalid};

/// Most lines `access_log.queue` may hold.
const MAX_QUEUE: usize = 1_000_000;

/// `[access_log]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogSettings {
    /// `stdout`, `off`, or the path of a file to append to.
    pub output: String,
    /// Lines waiting for the writer thread; past it lines are dropped and counted.
    pub queue: usize,
}

/// Where access-log lines go, as `access_log.output` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogOutput {
    /// Nowhere.
    Off,
    /// Standard output.
    Stdout,
    /// Appended to this file.
    File(PathBuf),
}

impl AccessLogSettings {
    /// `access_log.output`, read: the words `stdout` and `off`, else a file path.
    pub fn output(&self) -> AccessLogOutput {
        match self.output.trim() {
            "off" => AccessLogOutput::Off,
            "stdout" => AccessLogOutput::Stdout,
            path => AccessLogOutput::File(PathBuf::from(path)),
        }
    }

    /// Checks `[access_log]`.
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if self.output.trim().is_empty() {
            return Err(invalid("access_log.output", "must be `stdout`, `off` or a file path"));
        }
        if let AccessLogOutput::File(path) = self.output()
            && (path.as_os_str().to_string_lossy().ends_with('/') || path.file_name().is_none())
        {
            return Err(invalid(
                "access_log.output",
                format!("`{}` names a directory, not a file", path.display()),
            ));
        }
        if !(1..=MAX_QUEUE).contains(&self.queue) {
            return Err(invalid("access_log.queue", format!("must be between 1 and {MAX_QUEUE}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Settings;
    use super::super::tests::env;
    use super::*;

    #[test]
    fn the_output_is_stdout_by_default_and_reads_off_stdout_or_a_path() {
        let settings = Settings::load_with_env(None, env(&[])).unwrap();
        assert_eq!(settings.access_log.output(), AccessLogOutput::Stdout);
        for (value, expected) in [
            ("off", AccessLogOutput::Off),
            ("stdout", AccessLogOutput::Stdout),
            ("/var/log/keel/access.log", AccessLogOutput::File("/var/log/keel/access.log".into())),
        ] {
            let vars = env(&[("KEEL__ACCESS_LOG__OUTPUT", value)]);
            let settings = Settings::load_with_env(None, vars).unwrap();
            assert_eq!(settings.access_log.output(), expected, "{value}");
        }
    }

    #[test]
    fn invalid_values_name_their_key() {
        for (var, value, key) in [
            ("KEEL__ACCESS_LOG__OUTPUT", " ", "access_log.output"),
            ("KEEL__ACCESS_LOG__OUTPUT", "/var/log/", "access_log.output"),
            ("KEEL__ACCESS_LOG__QUEUE", "0", "access_log.queue"),
        ] {
            let err = Settings::load_with_env(None, env(&[(var, value)])).unwrap_err().to_string();
            assert!(err.contains(key), "{var}={value}: `{err}` does not name {key}");
        }
    }
}
