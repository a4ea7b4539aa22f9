use super::*;
use proptest::prelude::*;

const MINIMAL: &str = r#"
name = "vadd"
command = "./vadd"
[protocol]
type = "exec"
"#;

fn parse(text: &str) -> Result<FunctionManifest, ManifestError> {
    FunctionManifest::from_toml_str(text)
}

/// The problems of an invalid manifest; fails the test for a valid or unparsable one.
fn problems(text: &str) -> Vec<Problem> {
    match parse(text) {
        Err(ManifestError::Invalid { problems }) => problems,
        other => panic!("expected validation problems, got {other:?}"),
    }
}

/// `MINIMAL` plus `extra` TOML (tables appended after the top-level keys).
fn with(extra: &str) -> String {
    format!("{MINIMAL}\n{extra}\n")
}

/// Replaces the protocol table of `MINIMAL` and appends `extra`.
fn http_with(extra: &str) -> String {
    format!(
        "{}\n[protocol]\ntype = \"http\"\n{extra}\n",
        MINIMAL.replace("[protocol]\ntype = \"exec\"\n", "")
    )
}

fn assert_single_problem(text: &str, field: &str, reason_part: &str) {
    let found = problems(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].field, field, "{found:#?}");
    assert!(
        found[0].reason.contains(reason_part),
        "reason {:?} lacks {reason_part:?}",
        found[0].reason
    );
    assert!(!found[0].fix.is_empty(), "every problem says how to fix it");
}

#[test]
fn a_minimal_manifest_gets_the_documented_defaults() {
    let m = parse(MINIMAL).unwrap();
    assert_eq!(m.name, "vadd");
    assert_eq!(m.command, "./vadd");
    assert!(m.args.is_empty() && m.env.is_empty() && m.artifact.is_none());
    assert_eq!(m.protocol, Protocol::Exec);
    assert_eq!(
        m.resources,
        Resources {
            vram: 1 << 30,
            compute_share: 1.0,
            qos: Qos::Medium
        }
    );
    assert_eq!(
        m.scaling,
        Scaling {
            min_instances: 0,
            max_instances: 1,
            concurrency: 1,
            gpu_idle_timeout: Duration::from_secs(10),
            instance_idle_timeout: Duration::from_secs(300),
            prewarm: Prewarm::OnRequest,
        }
    );
}

#[test]
fn every_field_is_read() {
    let text = r#"
name = "lab-2"
description = "a model server"
command = "./lab"
args = ["--verbose", "x"]
env = { LAB_MODEL_MIB = "128", _X = "" }

[artifact]
url = "s3://bucket/lab"
sha256 = "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789"

[resources]
vram = "2GiB"
compute_share = 0.25
qos = "high"

[protocol]
type = "http"
port = 8080
health_path = "/ready"

[scaling]
min_instances = 1
max_instances = 3
concurrency = 8
gpu_idle_timeout = "1m30s"
instance_idle_timeout = "1h"
prewarm = "on-deploy"
"#;
    let m = parse(text).unwrap();
    assert_eq!(m.name, "lab-2");
    assert_eq!(m.description.as_deref(), Some("a model server"));
    assert_eq!(m.args, ["--verbose", "x"]);
    assert_eq!(m.env.get("LAB_MODEL_MIB").map(String::as_str), Some("128"));
    assert_eq!(
        m.artifact,
        Some(Artifact {
            source: ArtifactSource::Url("s3://bucket/lab".into()),
            sha256: Some("abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789".into()),
        })
    );
    assert_eq!(m.resources.vram, 2 << 30);
    assert_eq!(m.resources.compute_share, 0.25);
    assert_eq!(m.resources.qos, Qos::High);
    assert_eq!(
        m.protocol,
        Protocol::Http {
            port: Some(8080),
            health_path: "/ready".into()
        }
    );
    assert_eq!(m.scaling.min_instances, 1);
    assert_eq!(m.scaling.max_instances, 3);
    assert_eq!(m.scaling.concurrency, 8);
    assert_eq!(m.scaling.gpu_idle_timeout, Duration::from_secs(90));
    assert_eq!(m.scaling.instance_idle_timeout, Duration::from_secs(3600));
    assert_eq!(m.scaling.prewarm, Prewarm::OnDeploy);
}

#[test]
fn names_must_be_url_safe_labels() {
    for (name, reason) in [
        ("", "empty"),
        ("Blur", "characters"),
        ("blur_fast", "characters"),
        ("9lives", "start with a letter"),
        ("blur-", "start with a letter"),
    ] {
        let text = MINIMAL.replace("name = \"vadd\"", &format!("name = {name:?}"));
        assert_single_problem(&text, "name", reason);
    }
    let long = MINIMAL.replace("name = \"vadd\"", &format!("name = \"{}\"", "a".repeat(64)));
    assert_single_problem(&long, "name", "64 characters");
    let ok = MINIMAL.replace("name = \"vadd\"", &format!("name = \"{}\"", "a".repeat(63)));
    assert!(parse(&ok).is_ok());
}

#[test]
fn command_must_name_a_program() {
    let text = MINIMAL.replace("command = \"./vadd\"", "command = \"  \"");
    assert_single_problem(&text, "command", "empty");
    let text = MINIMAL.replace("[protocol]", "args = [\"ok\", \"bad\\u0000\"]\n[protocol]");
    assert_single_problem(&text, "args[1]", "NUL");
}

#[test]
fn env_names_must_be_valid_and_not_reserved() {
    let env = |table: &str| MINIMAL.replace("[protocol]", &format!("env = {table}\n[protocol]"));
    assert_single_problem(
        &env("{ \"1X\" = \"a\" }"),
        "env.1X",
        "not a valid variable name",
    );
    assert_single_problem(
        &env("{ \"A-B\" = \"a\" }"),
        "env.A-B",
        "not a valid variable name",
    );
    assert_single_problem(
        &env("{ GPUFN_WORKER = \"x\" }"),
        "env.GPUFN_WORKER",
        "set by the gpufn runner",
    );
    assert_single_problem(
        &env("{ LD_PRELOAD = \"x\" }"),
        "env.LD_PRELOAD",
        "set by the gpufn runner",
    );
    // PORT is the runner's only for http functions.
    assert!(parse(&env("{ PORT = \"1\" }")).is_ok());
    let http = http_with("").replace("[protocol]", "env = { PORT = \"1\" }\n[protocol]");
    assert_single_problem(&http, "env.PORT", "set by the gpufn runner");
}

#[test]
fn artifacts_have_one_source_and_remote_ones_are_pinned() {
    let hash = "0".repeat(64);
    let path = parse(&with("[artifact]\npath = \"build/vadd\"")).unwrap();
    assert_eq!(
        path.artifact.unwrap().source,
        ArtifactSource::Path("build/vadd".into())
    );
    assert_single_problem(
        &with(&format!(
            "[artifact]\npath = \"a\"\nurl = \"s3://b/a\"\nsha256 = \"{hash}\""
        )),
        "artifact",
        "both",
    );
    assert_single_problem(&with("[artifact]"), "artifact", "neither");
    assert_single_problem(
        &with("[artifact]\nurl = \"s3://bucket/vadd\""),
        "artifact.sha256",
        "pinned",
    );
    assert_single_problem(
        &with("[artifact]\nurl = \"s3://bucket/vadd\"\nsha256 = \"abc\""),
        "artifact.sha256",
        "64 hexadecimal",
    );
    assert_single_problem(
        &with(&format!(
            "[artifact]\nurl = \"ftp://host/vadd\"\nsha256 = \"{hash}\""
        )),
        "artifact.url",
        "\"ftp\"",
    );
    assert_single_problem(
        &with(&format!(
            "[artifact]\nurl = \"bucket/vadd\"\nsha256 = \"{hash}\""
        )),
        "artifact.url",
        "not a URL",
    );
    assert!(
        parse(&with(&format!(
            "[artifact]\nurl = \"gs://b/v\"\nsha256 = \"{hash}\""
        )))
        .is_ok()
    );
}

#[test]
fn resources_are_checked() {
    assert_single_problem(&with("[resources]\nvram = \"0\""), "resources.vram", "is 0");
    assert_single_problem(
        &with("[resources]\nvram = \"4GB\""),
        "resources.vram",
        "binary units",
    );
    assert_single_problem(
        &with("[resources]\nvram = \"lots\""),
        "resources.vram",
        "number",
    );
    assert_single_problem(
        &with("[resources]\nvram = \"4 parsecs\""),
        "resources.vram",
        "unknown unit",
    );
    for share in ["0.0", "-0.5", "1.5", "nan", "inf"] {
        assert_single_problem(
            &with(&format!("[resources]\ncompute_share = {share}")),
            "resources.compute_share",
            "outside (0, 1]",
        );
    }
    assert_single_problem(
        &with("[resources]\nqos = \"urgent\""),
        "resources.qos",
        "not a QoS level",
    );
    let m = parse(&with(
        "[resources]\nvram = \"512MiB\"\nqos = \"critical\"\ncompute_share = 1.0",
    ))
    .unwrap();
    assert_eq!(
        (m.resources.vram, m.resources.qos),
        (512 << 20, Qos::Critical)
    );
}

#[test]
fn protocols_take_only_their_own_fields() {
    let exec_port = MINIMAL.replace("type = \"exec\"", "type = \"exec\"\nport = 80");
    assert_single_problem(&exec_port, "protocol.port", "do not listen");
    let exec_health = MINIMAL.replace("type = \"exec\"", "type = \"exec\"\nhealth_path = \"/h\"");
    assert_single_problem(&exec_health, "protocol.health_path", "no health endpoint");
    let grpc = MINIMAL.replace("type = \"exec\"", "type = \"grpc\"");
    assert_single_problem(&grpc, "protocol.type", "\"grpc\"");

    let http = parse(&http_with("")).unwrap();
    assert_eq!(
        http.protocol,
        Protocol::Http {
            port: None,
            health_path: "/healthz".into()
        }
    );
    for port in ["0", "-1", "65536"] {
        assert_single_problem(
            &http_with(&format!("port = {port}")),
            "protocol.port",
            "not a port",
        );
    }
    assert_single_problem(
        &http_with("health_path = \"healthz\""),
        "protocol.health_path",
        "absolute",
    );
}

#[test]
fn max_instances_must_cover_min_instances() {
    let text = with("[scaling]\nmin_instances = 2\nmax_instances = 1");
    let found = problems(&text);
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].to_string(),
        "scaling.max_instances: must be ≥ min_instances (2) (raise max_instances or lower min_instances)"
    );
}

#[test]
fn scaling_counts_are_in_range() {
    assert_single_problem(
        &with("[scaling]\nmin_instances = -1"),
        "scaling.min_instances",
        "0..=1024",
    );
    assert_single_problem(
        &with("[scaling]\nmax_instances = 0"),
        "scaling.max_instances",
        "1..=1024",
    );
    assert_single_problem(
        &with("[scaling]\nmax_instances = 100000"),
        "scaling.max_instances",
        "1..=1024",
    );
    assert_single_problem(
        &with("[scaling]\nconcurrency = 4"),
        "scaling.concurrency",
        "one request",
    );
    let http = parse(&http_with("[scaling]\nconcurrency = 4")).unwrap();
    assert_eq!(http.scaling.concurrency, 4);
    assert_single_problem(
        &http_with("[scaling]\nconcurrency = 0"),
        "scaling.concurrency",
        "1..=1024",
    );
}

#[test]
fn timeouts_are_durations_in_order() {
    assert_single_problem(
        &with("[scaling]\ngpu_idle_timeout = \"10\""),
        "scaling.gpu_idle_timeout",
        "without a unit",
    );
    assert_single_problem(
        &with("[scaling]\ngpu_idle_timeout = \"10 sec\""),
        "scaling.gpu_idle_timeout",
        "unknown unit",
    );
    assert_single_problem(
        &with("[scaling]\ngpu_idle_timeout = \"0s\""),
        "scaling.gpu_idle_timeout",
        "is 0",
    );
    let found = problems(&with(
        "[scaling]\ngpu_idle_timeout = \"2m\"\ninstance_idle_timeout = \"90s\"",
    ));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].field, "scaling.instance_idle_timeout");
    assert_eq!(found[0].reason, "must be ≥ gpu_idle_timeout (2m)");
    assert_single_problem(
        &with("[scaling]\nprewarm = \"always\""),
        "scaling.prewarm",
        "not a prewarm policy",
    );
    let never = parse(&with("[scaling]\nprewarm = \"never\"")).unwrap();
    assert_eq!(never.scaling.prewarm, Prewarm::Never);
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = r#"
name = "Bad Name"
command = ""
[resources]
vram = "4GB"
qos = "urgent"
[protocol]
type = "exec"
port = 1
[scaling]
min_instances = 3
max_instances = 2
"#;
    let err = parse(text).unwrap_err();
    let ManifestError::Invalid { problems } = &err else {
        panic!("{err:?}")
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "name",
            "command",
            "protocol.port",
            "resources.vram",
            "resources.qos",
            "scaling.max_instances"
        ]
    );
    let message = err.to_string();
    assert!(
        message.starts_with("function.toml has 6 problem(s):\n  name: "),
        "{message}"
    );
}

#[test]
fn syntax_and_type_errors_name_the_key() {
    let typo = MINIMAL.replace("command", "comand");
    let ManifestError::Syntax { message } = parse(&typo).unwrap_err() else {
        panic!("expected a syntax error")
    };
    assert!(message.contains("comand"), "{message}");

    let wrong_type = with("[scaling]\nmax_instances = \"two\"");
    let ManifestError::Syntax { message } = parse(&wrong_type).unwrap_err() else {
        panic!("expected a syntax error")
    };
    assert!(message.contains("max_instances"), "{message}");

    let missing = MINIMAL.replace("name = \"vadd\"", "");
    let ManifestError::Syntax { message } = parse(&missing).unwrap_err() else {
        panic!("expected a syntax error")
    };
    assert!(message.contains("name"), "{message}");

    let ManifestError::Syntax { message } = parse("name = ").unwrap_err() else {
        panic!("expected a syntax error")
    };
    assert!(message.contains("line 1"), "{message}");
}

#[test]
fn sizes_use_binary_units() {
    assert_eq!(parse_size("4GiB"), Ok(4 << 30));
    assert_eq!(parse_size(" 512mib "), Ok(512 << 20));
    assert_eq!(parse_size("1024"), Ok(1024));
    assert_eq!(parse_size("1TiB"), Ok(1 << 40));
    assert!(
        parse_size("99999999999TiB")
            .unwrap_err()
            .contains("too large")
    );
    assert!(
        parse_size("99999999999999999999999")
            .unwrap_err()
            .contains("too large")
    );
    assert!(parse_size("GiB").unwrap_err().contains("number"));
}

#[test]
fn durations_combine_units() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
    assert!(parse_duration("").is_err());
    assert!(
        parse_duration("s")
            .unwrap_err()
            .contains("without a number")
    );
    assert!(parse_duration("1.5s").is_err());
    assert!(parse_duration("-1s").is_err());
    assert!(
        parse_duration("99999999999999999999d")
            .unwrap_err()
            .contains("too long")
    );
    assert!(
        parse_duration("9999999999999999d")
            .unwrap_err()
            .contains("too long")
    );
    assert_eq!(
        format_duration(Duration::from_millis(5_400_250)),
        "1h30m250ms"
    );
    assert_eq!(format_duration(Duration::ZERO), "0s");
}

/// The manifests shipped in `functions/examples/` are valid and say what their READMEs say.
#[test]
fn the_example_manifests_are_valid() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions/examples");
    let load = |name: &str| {
        let path = examples.join(name).join("function.toml");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    for name in ["vadd", "blur", "matmul"] {
        let m = load(name);
        assert_eq!(m.name, name);
        assert_eq!(m.protocol, Protocol::Exec);
        assert_eq!(m.command, format!("./build/{name}"));
        assert_eq!(m.scaling.concurrency, 1);
    }
    assert_eq!(
        load("blur").env.get("BLUR_MODE").map(String::as_str),
        Some("blur")
    );
    let lab = load("lab");
    assert_eq!(lab.name, "lab");
    assert!(
        matches!(lab.protocol, Protocol::Http { port: None, ref health_path } if health_path == "/healthz")
    );
    assert_eq!(lab.scaling.gpu_idle_timeout, Duration::from_secs(10));
    assert!(lab.resources.vram >= 256 << 20);
    assert_eq!(lab.scaling.prewarm, Prewarm::OnRequest);
}

/// A valid manifest using every field, the seed for mutations.
const FULL: &str = r#"name = "lab"
command = "./build/lab"
args = ["a"]
env = { LAB_MODEL_MIB = "64" }
[artifact]
path = "build/lab"
[resources]
vram = "1GiB"
compute_share = 0.5
qos = "high"
[protocol]
type = "http"
port = 8080
[scaling]
min_instances = 0
max_instances = 2
concurrency = 4
gpu_idle_timeout = "10s"
instance_idle_timeout = "5m"
prewarm = "on-deploy"
"#;

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC*") {
        let _ = parse(&text);
    }

    #[test]
    fn mutated_manifests_never_panic_and_errors_name_fields(
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = FULL.as_bytes().to_vec();
        for (index, byte) in edits {
            let i = index.index(bytes.len());
            bytes[i] = byte;
        }
        if let Ok(text) = String::from_utf8(bytes)
            && let Err(ManifestError::Invalid { problems }) = parse(&text)
        {
                prop_assert!(!problems.is_empty());
                for p in problems {
                    prop_assert!(!p.field.is_empty() && !p.reason.is_empty() && !p.fix.is_empty());
                }
        }
    }

    #[test]
    fn values_of_any_shape_never_panic(
        key in prop::sample::select(vec![
            "vram", "compute_share", "qos", "min_instances", "max_instances", "concurrency",
            "gpu_idle_timeout", "instance_idle_timeout", "prewarm", "port", "health_path",
        ]),
        value in prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| format!("{f:?}")),
            "[a-zA-Z0-9 .-]{0,12}".prop_map(|s| format!("{s:?}")),
        ],
    ) {
        let text = FULL
            .lines()
            .map(|line| if line.starts_with(&format!("{key} =")) { format!("{key} = {value}") } else { line.to_owned() })
            .collect::<Vec<_>>()
            .join("\n");
        let _ = parse(&text);
    }

    #[test]
    fn durations_round_trip(ms in 1u64..=10_000_000_000) {
        let d = Duration::from_millis(ms);
        prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
    }
}

#[test]
fn limits_have_defaults_and_are_checked() {
    let m = parse(MINIMAL).unwrap();
    assert_eq!(
        m.limits,
        Limits {
            timeout: defaults::TIMEOUT,
            startup_timeout: defaults::STARTUP_TIMEOUT,
            queue: defaults::QUEUE,
            memory: None,
        }
    );
    let set = parse(&with(
        "[limits]\ntimeout = \"2s\"\nstartup_timeout = \"90s\"\nqueue = 0\nmemory = \"8GiB\"",
    ))
    .unwrap();
    assert_eq!(set.limits.timeout, Duration::from_secs(2));
    assert_eq!(set.limits.startup_timeout, Duration::from_secs(90));
    assert_eq!(set.limits.queue, 0);
    assert_eq!(set.limits.memory, Some(8 << 30));
    assert_single_problem(
        &with("[limits]\ntimeout = \"0s\""),
        "limits.timeout",
        "is 0",
    );
    assert_single_problem(&with("[limits]\nqueue = -1"), "limits.queue", "outside");
    assert_single_problem(
        &with("[limits]\nmemory = \"1MiB\""),
        "limits.memory",
        "below 64MiB",
    );
    assert_single_problem(
        &with("[limits]\nmemory = \"8GB\""),
        "limits.memory",
        "ambiguous",
    );
}
