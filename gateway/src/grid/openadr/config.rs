//! `[openadr]` in the config: parsed raw (unknown keys rejected) and validated into
//! `OpenAdrConfig`. The VEN's OAuth secret is read from the environment or a file at start and
//! never logged (its `Debug` prints only whether it is set).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::GatewayError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOpenAdr {
    enabled: bool,
    vtn_url: String,
    token_url: Option<String>,
    client_id: String,
    client_secret_env: Option<String>,
    client_secret_file: Option<PathBuf>,
    programs: Vec<String>,
    ven_name: String,
    poll_interval_seconds: f64,
    request_timeout_seconds: f64,
    max_backoff_seconds: f64,
    comms_loss_grace_seconds: f64,
    safe_limit_watts: Option<f64>,
    simple_level_fractions: [f64; 4],
    reports: bool,
    open_interval_report_seconds: f64,
}

/// The OAuth client secret: kept out of `Debug` output and logs.
#[derive(Clone, PartialEq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where the secret comes from; resolved when the VEN starts, so parsing a config never
/// depends on the environment.
#[derive(Clone, Debug, PartialEq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

impl SecretSource {
    pub fn read(&self) -> Result<Secret, GatewayError> {
        let text = match self {
            SecretSource::Env(name) => std::env::var(name).map_err(|_| {
                GatewayError::Config(format!(
                    "openadr.client_secret_env: environment variable {name} is not set"
                ))
            })?,
            SecretSource::File(path) => std::fs::read_to_string(path).map_err(|e| {
                GatewayError::Config(format!(
                    "openadr.client_secret_file: cannot read {}: {e}",
                    path.display()
                ))
            })?,
        };
        let text = text.trim();
        if text.is_empty() {
            return Err(GatewayError::Config(
                "openadr: the client secret is empty".into(),
            ));
        }
        Ok(Secret::new(text))
    }
}

/// The validated `[openadr]` section: how the VEN reaches its VTN and how it maps events.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenAdrConfig {
    pub enabled: bool,
    /// The VTN's API root; always ends in `/` so relative paths join under it.
    pub vtn_url: Url,
    pub token_url: Url,
    pub client_id: String,
    pub client_secret: SecretSource,
    /// Program names whose events the VEN follows.
    pub programs: Vec<String>,
    pub ven_name: String,
    pub poll_interval: Duration,
    pub request_timeout: Duration,
    pub max_backoff: Duration,
    /// How long the VTN may be unreachable before the safe limit is put in place.
    pub comms_loss_grace: Duration,
    /// The cap once known limits run out while the VTN is unreachable (the lower of this and
    /// the subscription, when both are known).
    pub safe_limit_watts: Option<f64>,
    /// Fractions of the subscription for SIMPLE levels 0 (normal) … 3 (emergency).
    pub simple_level_fractions: [f64; 4],
    pub reports: bool,
    /// Open-ended intervals are reported in windows of this length.
    pub open_interval_report: Duration,
}

fn seconds(key: &str, value: f64, min: f64, max: f64) -> Result<Duration, GatewayError> {
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(GatewayError::Config(format!(
            "openadr.{key}: must be between {min} and {max} seconds"
        )))
    }
}

/// Parses a URL and makes it a directory (`…/`), so `join("events")` stays under it.
fn dir_url(key: &str, text: &str) -> Result<Url, GatewayError> {
    let mut url = Url::parse(text)
        .map_err(|e| GatewayError::Config(format!("openadr.{key}: {text:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(GatewayError::Config(format!(
            "openadr.{key}: must be an http(s) URL"
        )));
    }
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    Ok(url)
}

impl RawOpenAdr {
    /// The VTN's root and its token endpoint (default: `auth/token` under the root).
    fn urls(&self) -> Result<(Url, Url), GatewayError> {
        let vtn_url = dir_url("vtn_url", &self.vtn_url)?;
        let token_url = match &self.token_url {
            Some(t) => Url::parse(t)
                .map_err(|e| GatewayError::Config(format!("openadr.token_url: {t:?}: {e}")))?,
            None => vtn_url
                .join("auth/token")
                .map_err(|e| GatewayError::Config(format!("openadr.vtn_url: {e}")))?,
        };
        Ok((vtn_url, token_url))
    }

    pub fn validate(self, base: &Path) -> Result<OpenAdrConfig, GatewayError> {
        let bad = |key: &str, why: &str| Err(GatewayError::Config(format!("openadr.{key}: {why}")));
        let (vtn_url, token_url) = self.urls()?;
        let client_secret = match (self.client_secret_env, self.client_secret_file) {
            (Some(env), None) if !env.is_empty() => SecretSource::Env(env),
            (None, Some(file)) => SecretSource::File(base.join(file)),
            _ => {
                return bad(
                    "client_secret_env",
                    "set exactly one of client_secret_env and client_secret_file",
                )
            }
        };
        if self.enabled && (self.client_id.is_empty() || self.programs.is_empty()) {
            return bad(
                "programs",
                "client_id and at least one program are needed when enabled",
            );
        }
        if self.ven_name.is_empty() || self.ven_name.len() > 128 {
            return bad("ven_name", "must be 1 to 128 characters");
        }
        if self
            .safe_limit_watts
            .is_some_and(|w| !(w.is_finite() && w >= 0.0))
        {
            return bad("safe_limit_watts", "must be a number of watts, at least 0");
        }
        let fractions = self.simple_level_fractions;
        if fractions
            .iter()
            .any(|f| !(f.is_finite() && (0.0..=1.0).contains(f)))
        {
            return bad("simple_level_fractions", "each must be between 0 and 1");
        }
        Ok(OpenAdrConfig {
            enabled: self.enabled,
            vtn_url,
            token_url,
            client_id: self.client_id,
            client_secret,
            programs: self.programs,
            ven_name: self.ven_name,
            poll_interval: seconds(
                "poll_interval_seconds",
                self.poll_interval_seconds,
                0.1,
                86_400.0,
            )?,
            request_timeout: seconds(
                "request_timeout_seconds",
                self.request_timeout_seconds,
                0.1,
                600.0,
            )?,
            max_backoff: seconds(
                "max_backoff_seconds",
                self.max_backoff_seconds,
                0.1,
                86_400.0,
            )?,
            comms_loss_grace: seconds(
                "comms_loss_grace_seconds",
                self.comms_loss_grace_seconds,
                0.0,
                86_400.0,
            )?,
            safe_limit_watts: self.safe_limit_watts,
            simple_level_fractions: fractions,
            reports: self.reports,
            open_interval_report: seconds(
                "open_interval_report_seconds",
                self.open_interval_report_seconds,
                1.0,
                86_400.0,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(extra: &str) -> Result<OpenAdrConfig, GatewayError> {
        let text = format!(
            r#"enabled = true
vtn_url = "http://127.0.0.1:3000/openadr3/3.1.0"
client_id = "ven"
programs = ["dr"]
ven_name = "gridserve"
poll_interval_seconds = 30
request_timeout_seconds = 10
max_backoff_seconds = 300
comms_loss_grace_seconds = 60
simple_level_fractions = [1.0, 0.75, 0.5, 0.25]
reports = true
open_interval_report_seconds = 900
{extra}"#
        );
        toml::from_str::<RawOpenAdr>(&text)
            .map_err(|e| GatewayError::Config(e.to_string()))?
            .validate(Path::new("/etc/gridserve"))
    }

    #[test]
    fn urls_become_directories_and_the_token_url_defaults_under_the_vtn() {
        let c = raw("client_secret_env = \"S\"").unwrap();
        assert_eq!(c.vtn_url.as_str(), "http://127.0.0.1:3000/openadr3/3.1.0/");
        assert_eq!(
            c.vtn_url.join("events").unwrap().path(),
            "/openadr3/3.1.0/events"
        );
        assert_eq!(
            c.token_url.as_str(),
            "http://127.0.0.1:3000/openadr3/3.1.0/auth/token"
        );
        assert_eq!(c.client_secret, SecretSource::Env("S".into()));
    }

    #[test]
    fn the_secret_needs_exactly_one_source_and_never_prints() {
        assert!(raw("").is_err());
        let both = "client_secret_env = \"S\"\nclient_secret_file = \"s.txt\"";
        assert!(raw(both).is_err());
        let c = raw("client_secret_file = \"s.txt\"").unwrap();
        assert_eq!(
            c.client_secret,
            SecretSource::File("/etc/gridserve/s.txt".into())
        );
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
        let missing = SecretSource::Env("GRIDSERVE_TEST_NO_SUCH_VARIABLE".into()).read();
        assert!(matches!(missing, Err(GatewayError::Config(m)) if m.contains("not set")));
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = |extra: &str| {
            raw(&format!("client_secret_env = \"S\"\n{extra}"))
                .unwrap_err()
                .to_string()
        };
        assert!(err("safe_limit_watts = -1").contains("safe_limit_watts"));
        assert!(err("unknown_key = 1").contains("unknown"));
        let fractions = raw("client_secret_env = \"S\"").map(|c| c.simple_level_fractions);
        assert_eq!(fractions.unwrap(), [1.0, 0.75, 0.5, 0.25]);
    }
}
