//! Where the keys come from: the AWS SDKs' default chain, in their order.
//!
//! 1. The environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
//! 2. The profile (`AWS_PROFILE`, else `default`) in the shared files
//!    (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`; `AWS_CONFIG_FILE`, else
//!    `~/.aws/config`): static keys, or a `credential_process` whose JSON is read.
//! 3. A container's endpoint (ECS, EKS Pod Identity):
//!    `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` or `…_FULL_URI`, with
//!    `AWS_CONTAINER_AUTHORIZATION_TOKEN` or `…_TOKEN_FILE`.
//! 4. An EC2 instance's role through IMDSv2, unless `AWS_EC2_METADATA_DISABLED=true`.
//!
//! Not here: SSO sessions, `role_arn` profiles and web identity (EKS IRSA) need a call to
//! STS or SSO first. A `credential_process` bridges them (`aws configure
//! export-credentials --format process`). Temporary keys are fetched again five minutes
//! before they expire.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::Request;

use crate::http::{Http, HttpError};
use crate::sigv4::Credentials;

/// Temporary keys are fetched again this long before they expire.
const REFRESH_BEFORE_EXPIRY_S: u64 = 300;

/// Longest wait for a container or instance endpoint (IMDS answers within milliseconds
/// where it exists; elsewhere the chain must not hang).
const ENDPOINT_WAIT_MS: u64 = 1_000;

/// Longest wait for a `credential_process`.
const PROCESS_WAIT_MS: u64 = 60_000;

/// The ECS agent's address for relative container URIs.
const CONTAINER_HOST: &str = "http://169.254.170.2";

/// The EC2 instance metadata service.
const IMDS_HOST: &str = "http://169.254.169.254";

/// Why no keys were found.
#[derive(Debug)]
#[non_exhaustive]
pub enum CredentialsError {
    /// Nothing in the chain had keys.
    NotFound {
        /// What was looked at, in order.
        tried: Vec<String>,
    },
    /// A shared file has the profile but cannot be used.
    Profile {
        /// The profile.
        profile: String,
        /// What is wrong.
        detail: String,
    },
    /// A `credential_process` failed or printed something else than its JSON.
    Process {
        /// The command.
        command: String,
        /// What went wrong.
        detail: String,
    },
    /// A container or instance endpoint was named or found, but failed.
    Endpoint {
        /// Which.
        endpoint: String,
        /// What went wrong.
        detail: String,
    },
}

impl std::fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialsError::NotFound { tried } => write!(
                f,
                "no AWS credentials found (looked at: {}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile",
                tried.join(", ")
            ),
            CredentialsError::Profile { profile, detail } => {
                write!(f, "AWS profile `{profile}`: {detail}")
            }
            CredentialsError::Process { command, detail } => {
                write!(f, "credential_process `{command}`: {detail}")
            }
            CredentialsError::Endpoint { endpoint, detail } => {
                write!(f, "credentials from {endpoint}: {detail}")
            }
        }
    }
}

impl std::error::Error for CredentialsError {}

/// The environment the chain reads, captured once (tests give their own).
pub type Environment = BTreeMap<String, String>;

/// Keys, and when they stop working (Unix seconds; none for long-term keys).
type Cached = (Credentials, Option<u64>);

/// The chain, with the last keys it found and when to ask again (Unix seconds).
#[derive(Debug)]
pub struct CredentialChain {
    env: Environment,
    cached: Mutex<Option<(Cached, u64)>>,
}

/// When keys expiring at `expiry` are fetched again: [`REFRESH_BEFORE_EXPIRY_S`] before,
/// or half-way for keys that live shorter than twice that.
fn refresh_at(expiry: Option<u64>, now: u64) -> u64 {
    match expiry {
        None => u64::MAX,
        Some(at) => {
            let left = at.saturating_sub(now);
            at - left.min(REFRESH_BEFORE_EXPIRY_S).min(left / 2)
        }
    }
}

impl CredentialChain {
    /// The chain over the process's environment.
    pub fn from_process() -> Self {
        Self::new(std::env::vars().collect())
    }

    /// The chain over `env`.
    pub fn new(env: Environment) -> Self {
        CredentialChain {
            env,
            cached: Mutex::new(None),
        }
    }

    /// Keys to sign with: the cached ones until they are due for a refresh, else the
    /// chain's. A refresh that fails while the cached keys still work keeps them (a slow
    /// instance endpoint must not stop a run whose keys have minutes left).
    pub async fn get(&self, http: &Http) -> Result<Credentials, CredentialsError> {
        let now = unix_now();
        let cached = self.cached.lock().expect("not poisoned").clone();
        if let Some(((keys, expiry), refresh_at)) = &cached {
            if expiry.is_none() || *refresh_at > now {
                return Ok(keys.clone());
            }
        }
        match self.resolve(http).await {
            Ok(found) => {
                let keys = found.0.clone();
                let refresh_at = refresh_at(found.1, unix_now());
                *self.cached.lock().expect("not poisoned") = Some((found, refresh_at));
                Ok(keys)
            }
            Err(error) => match cached {
                Some(((keys, Some(expiry)), _)) if expiry > now => {
                    tracing::warn!(%error, "AWS credentials not refreshed; the cached keys still work");
                    Ok(keys)
                }
                _ => Err(error),
            },
        }
    }

    async fn resolve(&self, http: &Http) -> Result<Cached, CredentialsError> {
        let mut tried = Vec::new();
        if let Some(keys) = self.environment_keys() {
            return Ok((keys, None));
        }
        tried.push("AWS_ACCESS_KEY_ID".to_string());
        if let Some(found) = self.profile_keys(&mut tried).await? {
            return Ok(found);
        }
        if let Some(found) = self.container_keys(http, &mut tried).await? {
            return Ok(found);
        }
        if self.var("AWS_EC2_METADATA_DISABLED").as_deref() != Some("true") {
            tried.push("EC2 instance metadata".to_string());
            if let Ok(found) = instance_keys(http).await {
                return Ok(found);
            }
        }
        Err(CredentialsError::NotFound { tried })
    }

    fn var(&self, name: &str) -> Option<String> {
        self.env.get(name).filter(|v| !v.is_empty()).cloned()
    }

    fn environment_keys(&self) -> Option<Credentials> {
        Some(Credentials {
            access_key_id: self.var("AWS_ACCESS_KEY_ID")?,
            secret_access_key: self.var("AWS_SECRET_ACCESS_KEY")?,
            session_token: self.var("AWS_SESSION_TOKEN"),
        })
    }

    /// The profile's keys, from the credentials file first, then the config file.
    async fn profile_keys(
        &self,
        tried: &mut Vec<String>,
    ) -> Result<Option<Cached>, CredentialsError> {
        let profile = self.var("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let home = self.var("HOME").unwrap_or_default();
        let credentials_file = self
            .var("AWS_SHARED_CREDENTIALS_FILE")
            .unwrap_or_else(|| format!("{home}/.aws/credentials"));
        let config_file = self
            .var("AWS_CONFIG_FILE")
            .unwrap_or_else(|| format!("{home}/.aws/config"));
        let mut settings = BTreeMap::new();
        if let Ok(text) = std::fs::read_to_string(&config_file) {
            let section = if profile == "default" {
                "default".to_string()
            } else {
                format!("profile {profile}")
            };
            settings.extend(ini_section(&text, &section));
        }
        if let Ok(text) = std::fs::read_to_string(&credentials_file) {
            settings.extend(ini_section(&text, &profile));
        }
        tried.push(format!(
            "profile `{profile}` in {credentials_file} and {config_file}"
        ));
        if let Some(command) = settings.get("credential_process") {
            return run_process(command).await.map(Some);
        }
        let get = |key: &str| settings.get(key).filter(|v| !v.is_empty()).cloned();
        match (get("aws_access_key_id"), get("aws_secret_access_key")) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Some((
                Credentials {
                    access_key_id,
                    secret_access_key,
                    session_token: get("aws_session_token"),
                },
                None,
            ))),
            (None, None) if get("role_arn").is_some() || get("sso_session").is_some() => {
                Err(CredentialsError::Profile {
                    profile,
                    detail: "role_arn and SSO profiles are not read by ordo; give keys, or a credential_process such as `aws configure export-credentials --profile NAME --format process`".into(),
                })
            }
            (None, None) => Ok(None),
            _ => Err(CredentialsError::Profile {
                profile,
                detail: "has only one of aws_access_key_id and aws_secret_access_key".into(),
            }),
        }
    }

    /// ECS's or EKS Pod Identity's endpoint, when the environment names one.
    async fn container_keys(
        &self,
        http: &Http,
        tried: &mut Vec<String>,
    ) -> Result<Option<Cached>, CredentialsError> {
        let uri = match (
            self.var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
            self.var("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        ) {
            (Some(relative), _) => format!("{CONTAINER_HOST}{relative}"),
            (None, Some(full)) => full,
            (None, None) => return Ok(None),
        };
        tried.push(uri.clone());
        let token =
            match self.var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
                Some(path) => Some(std::fs::read_to_string(&path).map_err(|e| {
                    CredentialsError::Endpoint {
                        endpoint: uri.clone(),
                        detail: format!("cannot read the token file {path}: {e}"),
                    }
                })?),
                None => self.var("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
            };
        let mut request = Request::get(&uri);
        if let Some(token) = token {
            request = request.header("authorization", token.trim());
        }
        let failed = |detail: String| CredentialsError::Endpoint {
            endpoint: uri.clone(),
            detail,
        };
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| failed(e.to_string()))?;
        let body = fetch(http, request).await.map_err(failed)?;
        keys_from_json(&body).map(Some).map_err(failed)
    }
}

/// An EC2 instance role's keys, through IMDSv2 (a session token first).
async fn instance_keys(http: &Http) -> Result<Cached, String> {
    let token_request = Request::put(format!("{IMDS_HOST}/latest/api/token"))
        .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let token = fetch(http, token_request).await?;
    let get = |path: String| {
        Request::get(format!("{IMDS_HOST}{path}"))
            .header("x-aws-ec2-metadata-token", token.trim())
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())
    };
    let base = "/latest/meta-data/iam/security-credentials/".to_string();
    let role = fetch(http, get(base.clone())?).await?;
    let role = role.lines().next().unwrap_or_default().trim().to_string();
    let body = fetch(http, get(format!("{base}{role}"))?).await?;
    keys_from_json(&body)
}

/// A GET's or PUT's body, when the answer is 2xx within [`ENDPOINT_WAIT_MS`].
async fn fetch(http: &Http, request: Request<Full<Bytes>>) -> Result<String, String> {
    let answer = http
        .send(request, Duration::from_millis(ENDPOINT_WAIT_MS))
        .await
        .map_err(|e: HttpError| e.to_string())?;
    if !answer.status.is_success() {
        return Err(format!("answered {}", answer.status));
    }
    String::from_utf8(answer.body.to_vec()).map_err(|_| "answered non-UTF-8".to_string())
}

/// Runs a `credential_process` and reads its JSON.
async fn run_process(command: &str) -> Result<Cached, CredentialsError> {
    let failed = |detail: String| CredentialsError::Process {
        command: command.to_string(),
        detail,
    };
    let output = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_millis(PROCESS_WAIT_MS), output)
        .await
        .map_err(|_| failed(format!("no answer within {} s", PROCESS_WAIT_MS / 1000)))?
        .map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr);
        return Err(failed(format!("{}: {}", output.status, said.trim())));
    }
    keys_from_json(&String::from_utf8_lossy(&output.stdout)).map_err(failed)
}

/// Keys from the JSON every endpoint and `credential_process` gives.
fn keys_from_json(text: &str) -> Result<Cached, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let field = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| value.get(*n).and_then(|v| v.as_str()))
            .map(String::from)
    };
    let access_key_id = field(&["AccessKeyId"]).ok_or("no AccessKeyId")?;
    let secret_access_key = field(&["SecretAccessKey"]).ok_or("no SecretAccessKey")?;
    let expiry = match field(&["Expiration"]) {
        Some(at) => Some(unix_of_iso8601(&at).ok_or(format!("bad Expiration `{at}`"))?),
        None => None,
    };
    Ok((
        Credentials {
            access_key_id,
            secret_access_key,
            session_token: field(&["SessionToken", "Token"]),
        },
        expiry,
    ))
}

/// The keys and values of one `[section]` of an INI file (AWS's shared files).
fn ini_section(text: &str, section: &str) -> BTreeMap<String, String> {
    let mut inside = false;
    let mut found = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.split_whitespace().collect::<Vec<_>>().join(" ") == section;
            continue;
        }
        if let (true, Some((key, value))) = (inside, line.split_once('=')) {
            found.insert(key.trim().to_string(), value.trim().to_string());
        }
    }
    found
}

/// `YYYY-MM-DDTHH:MM:SS[.fff](Z|+00:00)` as Unix seconds.
fn unix_of_iso8601(text: &str) -> Option<u64> {
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let zone = text
        .get(19..)?
        .trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    if !matches!(zone, "Z" | "+00:00" | "") || !(1..=12).contains(&month) {
        return None;
    }
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Environment {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn resolve(chain: &CredentialChain) -> Result<Credentials, CredentialsError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let http = Http::new().unwrap();
        runtime.block_on(chain.get(&http))
    }

    #[test]
    fn the_environment_comes_first() {
        let chain = CredentialChain::new(env(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "token"),
            ("AWS_PROFILE", "nowhere"),
        ]));
        let keys = resolve(&chain).unwrap();
        assert_eq!(keys.access_key_id, "AKID");
        assert_eq!(keys.session_token.as_deref(), Some("token"));
    }

    #[test]
    fn a_profile_gives_keys_or_a_process() {
        let dir = tempfile::tempdir().unwrap();
        let credentials = dir.path().join("credentials");
        let config = dir.path().join("config");
        std::fs::write(
            &credentials,
            "[default]\naws_access_key_id = DEFAULTKEY\naws_secret_access_key = s1\n\n# a comment\n[ops]\naws_access_key_id=OPSKEY\naws_secret_access_key=s2\n",
        )
        .unwrap();
        std::fs::write(
            &config,
            "[profile tool]\ncredential_process = echo '{\"Version\":1,\"AccessKeyId\":\"PROCKEY\",\"SecretAccessKey\":\"s3\",\"SessionToken\":\"t\",\"Expiration\":\"2099-01-01T00:00:00Z\"}'\n[profile broken]\ncredential_process = exit 3\n",
        )
        .unwrap();
        let files = |profile: &str| {
            CredentialChain::new(env(&[
                ("AWS_SHARED_CREDENTIALS_FILE", credentials.to_str().unwrap()),
                ("AWS_CONFIG_FILE", config.to_str().unwrap()),
                ("AWS_PROFILE", profile),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ]))
        };
        assert_eq!(
            resolve(&files("default")).unwrap().access_key_id,
            "DEFAULTKEY"
        );
        assert_eq!(resolve(&files("ops")).unwrap().access_key_id, "OPSKEY");
        let from_process = resolve(&files("tool")).unwrap();
        assert_eq!(from_process.access_key_id, "PROCKEY");
        assert_eq!(from_process.session_token.as_deref(), Some("t"));
        let error = resolve(&files("broken")).unwrap_err().to_string();
        assert!(error.contains("exit status: 3"), "{error}");
        let error = resolve(&files("missing")).unwrap_err().to_string();
        assert!(error.starts_with("no AWS credentials found"), "{error}");
    }

    #[test]
    fn short_lived_keys_are_refreshed_half_way() {
        assert_eq!(refresh_at(None, 100), u64::MAX);
        assert_eq!(
            refresh_at(Some(10_000), 1_000),
            10_000 - REFRESH_BEFORE_EXPIRY_S
        );
        assert_eq!(refresh_at(Some(1_200), 1_000), 1_100);
        assert_eq!(refresh_at(Some(900), 1_000), 900);
    }

    #[test]
    fn expirations_are_read() {
        assert_eq!(unix_of_iso8601("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix_of_iso8601("2015-08-30T12:36:00Z"), Some(1_440_938_160));
        assert_eq!(
            unix_of_iso8601("2000-02-29T00:00:00.123Z"),
            Some(951_782_400)
        );
        assert_eq!(
            unix_of_iso8601("2026-12-31T23:59:59+00:00"),
            Some(1_798_761_599)
        );
        assert_eq!(unix_of_iso8601("2026-13-01T00:00:00Z"), None);
        assert_eq!(unix_of_iso8601("2026-12-31T23:59:59+02:00"), None);
    }
}
