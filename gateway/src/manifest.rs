//! Function manifests (`function.toml`): parsing and validation into [`FunctionManifest`].
//!
//! Parsing happens in two steps. `toml` + serde read the text into a loosely typed mirror of
//! the file (strings for durations and sizes, wide integers for counts), refusing unknown
//! fields and wrong types with the key and its line. Validation then checks every field and
//! collects *all* problems, each naming the field, what is wrong and how to fix it, so a user
//! fixes a manifest in one round. Nothing here does I/O, and no input makes it panic.
//!
//! ```toml
//! name = "blur"
//! command = "./blur"          # run in the function's folder
//! args = ["edge"]
//! env = { BLUR_LOG = "1" }
//!
//! [artifact]                  # optional: where the program comes from
//! path = "build/blur"         # or url = "s3://bucket/blur" (then sha256 is required)
//! sha256 = "…64 hex digits…"
//!
//! [resources]
//! vram = "1GiB"               # default 1GiB
//! compute_share = 0.5         # fraction of a GPU, 0 < share <= 1; default 1
//! qos = "high"                # low | medium (default) | high | critical
//!
//! [protocol]
//! type = "exec"               # or "http" with optional port and health_path
//!
//! [scaling]
//! min_instances = 0
//! max_instances = 4
//! concurrency = 1             # requests per instance at once; exec: always 1
//! gpu_idle_timeout = "10s"    # idle this long: device memory is swapped out
//! instance_idle_timeout = "5m"  # idle this long: the instance stops (scale to zero)
//! prewarm = "on-request"      # on-deploy | on-request | never
//!
//! [limits]
//! timeout = "30s"             # one request, start to answer; longer is answered 504
//! startup_timeout = "60s"     # http: start until health_path answers 200
//! queue = 32                  # requests waiting for a free instance; more are answered 429
//! memory = "8GiB"             # optional: address-space limit of each instance process
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use gpufn_pool::Qos;
use serde::Deserialize;

#[cfg(test)]
mod tests;

/// A validated function manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionManifest {
    /// Lowercase letters, digits and `-`; used in URLs (`/v1/functions/{name}/invoke`).
    pub name: String,
    pub description: Option<String>,
    /// The program to start: a path relative to the function's folder (`./prog`) or a name
    /// looked up on `PATH`.
    pub command: String,
    pub args: Vec<String>,
    pub artifact: Option<Artifact>,
    /// Extra environment for every instance (the runner adds `GPUFN_*`, `LD_LIBRARY_PATH`
    /// and, for `http` functions, `PORT`).
    pub env: BTreeMap<String, String>,
    pub resources: Resources,
    pub protocol: Protocol,
    pub scaling: Scaling,
    pub limits: Limits,
}

/// Per-request and per-process limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest one request may take once it has an instance (exec: the whole process).
    pub timeout: Duration,
    /// Longest an `http` instance may take to answer its health check after it starts.
    pub startup_timeout: Duration,
    /// Requests that may wait for a free instance; more are refused with 429.
    pub queue: u32,
    /// Address-space limit (`RLIMIT_AS`) of each instance process, in bytes.
    pub memory: Option<u64>,
}

/// Where the function's program comes from, pinned by content hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    pub source: ArtifactSource,
    /// Lowercase hex SHA-256 of the artifact's bytes. Required for URLs; optional for local
    /// paths (a function built in place changes with every build).
    pub sha256: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArtifactSource {
    /// A file relative to the manifest's folder, or absolute.
    Path(String),
    /// An object_store URL (`s3://`, `gs://`, `az://`, `https://`, `file://`, …).
    Url(String),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Resources {
    /// Device memory the function's session may allocate, in bytes.
    pub vram: u64,
    /// Fraction of one GPU's compute, in (0, 1].
    pub compute_share: f64,
    pub qos: Qos,
}

/// How requests reach the function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// One process per request: the request body on stdin, the response on stdout, the exit
    /// code maps to the HTTP status, stderr is captured.
    Exec,
    /// A long-lived server; the gateway proxies requests to it.
    Http {
        /// The port the server must listen on (passed to it as `PORT`); `None` lets the
        /// runner pick a free port per instance.
        port: Option<u16>,
        /// Path the runner polls until the server answers 200.
        health_path: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scaling {
    pub min_instances: u32,
    pub max_instances: u32,
    /// Requests one instance serves at once.
    pub concurrency: u32,
    /// Idle this long, an instance's device memory is swapped out.
    pub gpu_idle_timeout: Duration,
    /// Idle this long, an instance stops (scale to zero unless `min_instances` keeps it).
    pub instance_idle_timeout: Duration,
    pub prewarm: Prewarm,
}

/// When the gateway starts (or swaps in) an instance ahead of need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Prewarm {
    /// When the function is deployed, so the first request finds it warm.
    OnDeploy,
    /// As soon as a request arrives, overlapping start-up with request handling.
    #[default]
    OnRequest,
    /// Only when a request needs an instance.
    Never,
}

impl Prewarm {
    pub fn name(self) -> &'static str {
        match self {
            Prewarm::OnDeploy => "on-deploy",
            Prewarm::OnRequest => "on-request",
            Prewarm::Never => "never",
        }
    }
}

/// Defaults for fields a manifest leaves out.
pub mod defaults {
    use std::time::Duration;

    pub const VRAM: u64 = 1 << 30;
    pub const COMPUTE_SHARE: f64 = 1.0;
    pub const MIN_INSTANCES: u32 = 0;
    pub const MAX_INSTANCES: u32 = 1;
    pub const CONCURRENCY: u32 = 1;
    pub const GPU_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
    pub const INSTANCE_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
    pub const HEALTH_PATH: &str = "/healthz";
    pub const TIMEOUT: Duration = Duration::from_secs(30);
    pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
    pub const QUEUE: u32 = 32;
}

/// Upper bounds that catch typos (an extra zero) rather than limit real use.
pub mod limits {
    pub const NAME_LEN: usize = 63;
    pub const MAX_INSTANCES: i64 = 1024;
    pub const CONCURRENCY: i64 = 1024;
    pub const QUEUE: i64 = 100_000;
    /// Smallest `limits.memory`: less cannot even load the stub.
    pub const MIN_MEMORY: u64 = 64 << 20;
}

/// Why a manifest was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ManifestError {
    /// Not valid TOML, an unknown field, or a value of the wrong type.
    #[error("function.toml: {message}")]
    Syntax { message: String },
    /// Well-formed, but some fields are invalid.
    #[error("function.toml has {} problem(s):\n{}", problems.len(), list(problems))]
    Invalid { problems: Vec<Problem> },
}

/// One invalid field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path, e.g. `scaling.max_instances`.
    pub field: String,
    /// What is wrong, e.g. `must be ≥ min_instances (2)`.
    pub reason: String,
    /// What to do about it.
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.field, self.reason, self.fix)
    }
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl FunctionManifest {
    /// Parses and validates the text of a `function.toml`.
    pub fn from_toml_str(text: &str) -> Result<FunctionManifest, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Syntax {
            message: e.to_string().trim_end().to_owned(),
        })?;
        let mut problems = Problems::default();
        let manifest = validate(raw, &mut problems);
        if problems.0.is_empty() {
            Ok(manifest)
        } else {
            Err(ManifestError::Invalid {
                problems: problems.0,
            })
        }
    }
}

/// The file as written, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    description: Option<String>,
    command: String,
    #[serde(default)]
    args: Vec<String>,
    artifact: Option<RawArtifact>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    resources: RawResources,
    protocol: RawProtocol,
    #[serde(default)]
    scaling: RawScaling,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    timeout: Option<String>,
    startup_timeout: Option<String>,
    queue: Option<i64>,
    memory: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArtifact {
    path: Option<String>,
    url: Option<String>,
    sha256: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    vram: Option<String>,
    compute_share: Option<f64>,
    qos: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProtocol {
    #[serde(rename = "type")]
    kind: String,
    port: Option<i64>,
    health_path: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScaling {
    min_instances: Option<i64>,
    max_instances: Option<i64>,
    concurrency: Option<i64>,
    gpu_idle_timeout: Option<String>,
    instance_idle_timeout: Option<String>,
    prewarm: Option<String>,
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, reason: impl Into<String>, fix: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            reason: reason.into(),
            fix: fix.into(),
        });
    }
}

fn validate(raw: RawManifest, problems: &mut Problems) -> FunctionManifest {
    check_name(&raw.name, problems);
    check_command(&raw.command, &raw.args, problems);
    let protocol = validate_protocol(raw.protocol, problems);
    check_env(&raw.env, &protocol, problems);
    let artifact = raw.artifact.and_then(|a| validate_artifact(a, problems));
    let resources = validate_resources(raw.resources, problems);
    let scaling = validate_scaling(raw.scaling, &protocol, problems);
    let limits = validate_limits(raw.limits, problems);
    FunctionManifest {
        name: raw.name,
        description: raw.description,
        command: raw.command,
        args: raw.args,
        artifact,
        env: raw.env,
        resources,
        protocol,
        scaling,
        limits,
    }
}

fn check_name(name: &str, problems: &mut Problems) {
    let fix = "use 1 to 63 lowercase letters, digits and '-', starting with a letter, e.g. \"image-blur\"";
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty() {
        problems.add("name", "is empty", fix);
    } else if name.len() > limits::NAME_LEN {
        problems.add("name", format!("is {} characters long", name.len()), fix);
    } else if !valid_chars {
        problems.add(
            "name",
            format!("{name:?} has characters other than a-z, 0-9 and '-'"),
            fix,
        );
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) || name.ends_with('-') {
        problems.add(
            "name",
            format!("{name:?} must start with a letter and not end with '-'"),
            fix,
        );
    }
}

fn check_command(command: &str, args: &[String], problems: &mut Problems) {
    if command.trim().is_empty() {
        problems.add(
            "command",
            "is empty",
            "name the program to run, e.g. \"./vadd\" (relative to the function's folder)",
        );
    } else if command.contains('\0') {
        problems.add("command", "contains a NUL character", "remove it");
    }
    for (i, arg) in args.iter().enumerate() {
        if arg.contains('\0') {
            problems.add(
                format!("args[{i}]"),
                "contains a NUL character",
                "remove it",
            );
        }
    }
}

/// Variables the runner sets itself; a manifest setting them would break the instance.
fn reserved_env(name: &str, protocol: &Protocol) -> bool {
    name.starts_with("GPUFN_")
        || name == "LD_LIBRARY_PATH"
        || name == "LD_PRELOAD"
        || (name == "PORT" && matches!(protocol, Protocol::Http { .. }))
}

fn check_env(env: &BTreeMap<String, String>, protocol: &Protocol, problems: &mut Problems) {
    for (name, value) in env {
        let field = format!("env.{name}");
        let valid_name = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_name {
            problems.add(
                field,
                format!("{name:?} is not a valid variable name"),
                "use letters, digits and '_', not starting with a digit",
            );
        } else if reserved_env(name, protocol) {
            problems.add(
                field,
                "is set by the gpufn runner",
                "remove it; the runner passes GPUFN_*, LD_LIBRARY_PATH, LD_PRELOAD and (for http functions) PORT itself",
            );
        } else if value.contains('\0') {
            problems.add(field, "contains a NUL character", "remove it");
        }
    }
}

/// Schemes `object_store` can fetch from.
const ARTIFACT_URL_SCHEMES: [&str; 10] = [
    "s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "http", "https", "file",
];

fn validate_artifact(raw: RawArtifact, problems: &mut Problems) -> Option<Artifact> {
    let sha256 = match raw.sha256 {
        Some(hash) if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(hash.to_ascii_lowercase())
        }
        Some(hash) => {
            problems.add(
                "artifact.sha256",
                format!("{hash:?} is not 64 hexadecimal digits"),
                "put the output of `sha256sum ARTIFACT` here",
            );
            None
        }
        None => None,
    };
    let source = match (raw.path, raw.url) {
        (Some(_), Some(_)) => {
            problems.add(
                "artifact",
                "has both path and url",
                "keep one: path for a local file, url for an object store",
            );
            return None;
        }
        (None, None) => {
            problems.add(
                "artifact",
                "has neither path nor url",
                "add path = \"build/prog\" or url = \"s3://bucket/prog\", or remove [artifact]",
            );
            return None;
        }
        (Some(path), None) => {
            if path.trim().is_empty() || path.contains('\0') {
                problems.add(
                    "artifact.path",
                    "is empty or contains a NUL character",
                    "give the artifact's path relative to function.toml",
                );
            }
            ArtifactSource::Path(path)
        }
        (None, Some(url)) => {
            check_artifact_url(&url, problems);
            if sha256.is_none() && !problems.0.iter().any(|p| p.field == "artifact.sha256") {
                problems.add(
                    "artifact.sha256",
                    "is missing; remote artifacts must be pinned by content hash",
                    "add sha256 = \"<output of sha256sum>\"",
                );
            }
            ArtifactSource::Url(url)
        }
    };
    Some(Artifact { source, sha256 })
}

fn check_artifact_url(url: &str, problems: &mut Problems) {
    let fix = format!(
        "use an object store URL with one of the schemes {}, e.g. \"s3://bucket/functions/blur\"",
        ARTIFACT_URL_SCHEMES.join(", ")
    );
    match url.split_once("://") {
        Some((scheme, rest)) if !rest.is_empty() && !url.contains(char::is_whitespace) => {
            if !ARTIFACT_URL_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
                problems.add(
                    "artifact.url",
                    format!("scheme {scheme:?} is not supported"),
                    fix,
                );
            }
        }
        _ => problems.add("artifact.url", format!("{url:?} is not a URL"), fix),
    }
}

fn validate_resources(raw: RawResources, problems: &mut Problems) -> Resources {
    let vram = match raw.vram {
        None => defaults::VRAM,
        Some(text) => match parse_size(&text) {
            Ok(0) => {
                problems.add(
                    "resources.vram",
                    "is 0",
                    "give the device memory the function needs, e.g. \"4GiB\"",
                );
                defaults::VRAM
            }
            Ok(bytes) => bytes,
            Err(reason) => {
                problems.add(
                    "resources.vram",
                    reason,
                    "write a size like \"512MiB\" or \"4GiB\"",
                );
                defaults::VRAM
            }
        },
    };
    let compute_share = match raw.compute_share {
        None => defaults::COMPUTE_SHARE,
        Some(share) if share.is_finite() && share > 0.0 && share <= 1.0 => share,
        Some(share) => {
            problems.add(
                "resources.compute_share",
                format!("{share} is outside (0, 1]"),
                "give the fraction of one GPU, e.g. 0.25; 1 is a whole GPU",
            );
            defaults::COMPUTE_SHARE
        }
    };
    let qos = match raw.qos.as_deref() {
        None => Qos::default(),
        Some(name) => match Qos::ALL.into_iter().find(|q| q.name() == name) {
            Some(qos) => qos,
            None => {
                problems.add(
                    "resources.qos",
                    format!("{name:?} is not a QoS level"),
                    "use low, medium, high or critical",
                );
                Qos::default()
            }
        },
    };
    Resources {
        vram,
        compute_share,
        qos,
    }
}

fn validate_protocol(raw: RawProtocol, problems: &mut Problems) -> Protocol {
    match raw.kind.as_str() {
        "exec" => {
            if raw.port.is_some() {
                problems.add(
                    "protocol.port",
                    "is set but exec functions do not listen on a port",
                    "remove it, or use type = \"http\"",
                );
            }
            if raw.health_path.is_some() {
                problems.add(
                    "protocol.health_path",
                    "is set but exec functions have no health endpoint",
                    "remove it, or use type = \"http\"",
                );
            }
            Protocol::Exec
        }
        "http" => {
            let port = raw.port.and_then(|port| match u16::try_from(port) {
                Ok(port) if port > 0 => Some(port),
                _ => {
                    problems.add(
                        "protocol.port",
                        format!("{port} is not a port number"),
                        "use 1 to 65535, or leave it out to let the runner choose a free port",
                    );
                    None
                }
            });
            let health_path = raw
                .health_path
                .unwrap_or_else(|| defaults::HEALTH_PATH.to_owned());
            let valid_path =
                health_path.starts_with('/') && health_path.bytes().all(|b| b.is_ascii_graphic());
            if !valid_path {
                problems.add(
                    "protocol.health_path",
                    format!("{health_path:?} is not an absolute URL path"),
                    "use a path like \"/healthz\"",
                );
            }
            Protocol::Http { port, health_path }
        }
        other => {
            problems.add(
                "protocol.type",
                format!("{other:?} is not a protocol"),
                "use \"exec\" (one process per request) or \"http\" (a long-lived server)",
            );
            Protocol::Exec
        }
    }
}

fn validate_scaling(raw: RawScaling, protocol: &Protocol, problems: &mut Problems) -> Scaling {
    let min_instances = count(
        raw.min_instances,
        "scaling.min_instances",
        defaults::MIN_INSTANCES,
        0,
        limits::MAX_INSTANCES,
        problems,
    );
    let max_instances = count(
        raw.max_instances,
        "scaling.max_instances",
        defaults::MAX_INSTANCES,
        1,
        limits::MAX_INSTANCES,
        problems,
    );
    if max_instances < min_instances {
        problems.add(
            "scaling.max_instances",
            format!("must be ≥ min_instances ({min_instances})"),
            "raise max_instances or lower min_instances",
        );
    }
    let concurrency = count(
        raw.concurrency,
        "scaling.concurrency",
        defaults::CONCURRENCY,
        1,
        limits::CONCURRENCY,
        problems,
    );
    if *protocol == Protocol::Exec && concurrency != 1 {
        problems.add(
            "scaling.concurrency",
            format!("is {concurrency} but an exec function's process serves one request"),
            "set it to 1 (or remove it) and raise max_instances for parallel requests",
        );
    }
    let gpu_idle_timeout = duration(
        raw.gpu_idle_timeout,
        "scaling.gpu_idle_timeout",
        defaults::GPU_IDLE_TIMEOUT,
        problems,
    );
    let instance_idle_timeout = duration(
        raw.instance_idle_timeout,
        "scaling.instance_idle_timeout",
        defaults::INSTANCE_IDLE_TIMEOUT,
        problems,
    );
    if instance_idle_timeout < gpu_idle_timeout {
        problems.add(
            "scaling.instance_idle_timeout",
            format!(
                "must be ≥ gpu_idle_timeout ({})",
                format_duration(gpu_idle_timeout)
            ),
            "an instance swaps its GPU memory out before it stops; raise instance_idle_timeout or lower gpu_idle_timeout",
        );
    }
    let prewarm = match raw.prewarm.as_deref() {
        None => Prewarm::default(),
        Some("on-deploy") => Prewarm::OnDeploy,
        Some("on-request") => Prewarm::OnRequest,
        Some("never") => Prewarm::Never,
        Some(other) => {
            problems.add(
                "scaling.prewarm",
                format!("{other:?} is not a prewarm policy"),
                "use \"on-deploy\", \"on-request\" or \"never\"",
            );
            Prewarm::default()
        }
    };
    Scaling {
        min_instances,
        max_instances,
        concurrency,
        gpu_idle_timeout,
        instance_idle_timeout,
        prewarm,
    }
}

fn validate_limits(raw: RawLimits, problems: &mut Problems) -> Limits {
    let timeout = duration(raw.timeout, "limits.timeout", defaults::TIMEOUT, problems);
    let startup_timeout = duration(
        raw.startup_timeout,
        "limits.startup_timeout",
        defaults::STARTUP_TIMEOUT,
        problems,
    );
    let queue = count(
        raw.queue,
        "limits.queue",
        defaults::QUEUE,
        0,
        limits::QUEUE,
        problems,
    );
    let memory = raw.memory.and_then(|text| match parse_size(&text) {
        Ok(bytes) if bytes >= limits::MIN_MEMORY => Some(bytes),
        Ok(_) => {
            problems.add(
                "limits.memory",
                format!("{text:?} is below 64MiB, too little to load the program and the stub"),
                "give the process's address-space limit, e.g. \"8GiB\", or remove it for no limit",
            );
            None
        }
        Err(reason) => {
            problems.add(
                "limits.memory",
                reason,
                "write a size like \"512MiB\" or \"8GiB\"",
            );
            None
        }
    });
    Limits {
        timeout,
        startup_timeout,
        queue,
        memory,
    }
}

/// A whole number field in `min..=max`, or `default` when absent or invalid (the problem is
/// recorded).
fn count(
    value: Option<i64>,
    field: &str,
    default: u32,
    min: i64,
    max: i64,
    problems: &mut Problems,
) -> u32 {
    match value {
        None => default,
        Some(n) if (min..=max).contains(&n) => u32::try_from(n).unwrap_or(default),
        Some(n) => {
            problems.add(
                field,
                format!("{n} is outside {min}..={max}"),
                format!("use a whole number from {min} to {max}"),
            );
            default
        }
    }
}

fn duration(
    value: Option<String>,
    field: &str,
    default: Duration,
    problems: &mut Problems,
) -> Duration {
    let Some(text) = value else {
        return default;
    };
    match parse_duration(&text) {
        Ok(d) if d.is_zero() => {
            problems.add(
                field,
                "is 0",
                "use at least 1s; a zero timeout would act between every two requests",
            );
            default
        }
        Ok(d) => d,
        Err(reason) => {
            problems.add(
                field,
                reason,
                "write a duration like \"500ms\", \"10s\", \"5m\" or \"1h30m\"",
            );
            default
        }
    }
}

/// Parses `4GiB`, `512MiB`, `1024` (bytes): binary units B, KiB, MiB, GiB, TiB. Decimal
/// units (`GB`) are refused rather than guessed.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    if digits.is_empty() {
        return Err(format!("{text:?} does not start with a number"));
    }
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is too large"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "kib" => 10,
        "mib" => 20,
        "gib" => 30,
        "tib" => 40,
        "kb" | "mb" | "gb" | "tb" | "k" | "m" | "g" | "t" => {
            return Err(format!(
                "{text:?} uses an ambiguous unit; sizes use binary units (KiB, MiB, GiB, TiB)"
            ));
        }
        other => return Err(format!("{text:?} has an unknown unit {other:?}")),
    };
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses durations such as `250ms`, `10s`, `5m`, `1h30m`, `2d`: one or more whole numbers,
/// each followed by a unit (ms, s, m, h, d).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("is empty".to_owned());
    }
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(format!("{text:?} has a unit without a number"));
        }
        let value: u64 = rest[..digits_end]
            .parse()
            .map_err(|_| format!("{text:?} is too long"))?;
        rest = &rest[digits_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ms: u64 = match &rest[..unit_end] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("{text:?} has a number without a unit")),
            other => return Err(format!("{text:?} has an unknown unit {other:?}")),
        };
        rest = &rest[unit_end..];
        total_ms = value
            .checked_mul(unit_ms)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| format!("{text:?} is too long"))?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// `10s`, `5m`, `1h30m`, `250ms`: the inverse of [`parse_duration`] for messages.
pub fn format_duration(duration: Duration) -> String {
    let mut ms = duration.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}
