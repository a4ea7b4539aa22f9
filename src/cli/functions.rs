//! `gpufn deploy`, `gpufn invoke`, `gpufn functions`, `gpufn logs`: the functions API from
//! the command line.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use gpufn_gateway::functions::client::{Answer, FunctionsClient};
use gpufn_gateway::manifest::{ArtifactSource, FunctionManifest};
use serde_json::Value;

/// Where the gateway is and who is asking.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// The gateway's HTTP API.
    #[arg(long, env = "GPUFN_API", default_value = "http://127.0.0.1:7080")]
    pub api: String,
    /// A token with the deploy (deploy, logs) or invoke scope (`gpufn up` prints one).
    #[arg(long, env = "GPUFN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ApiArgs {
    fn client(&self) -> anyhow::Result<FunctionsClient> {
        let token = self
            .token
            .as_deref()
            .context("no token: pass --token or set GPUFN_TOKEN (`gpufn up` prints one)")?;
        Ok(FunctionsClient::new(&self.api, token))
    }
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// The function's manifest; its artifact path is relative to the manifest's folder.
    pub manifest: PathBuf,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Args, Debug)]
pub struct InvokeArgs {
    /// The function's name.
    pub name: String,
    /// The request body: text, `@FILE`, or `@-` for stdin. Default: empty.
    #[arg(long, short)]
    pub data: Option<String>,
    /// For http functions: the path to call on the function, e.g. /generate.
    #[arg(long, default_value = "")]
    pub path: String,
    /// Print the timing headers (queue, cold start, swap-in, execution) to stderr.
    #[arg(long, short)]
    pub verbose: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The function's name.
    pub name: String,
    /// How many of the latest lines.
    #[arg(long, default_value_t = 200)]
    pub tail: usize,
    /// Only this instance's lines.
    #[arg(long)]
    pub instance: Option<u64>,
    #[command(flatten)]
    pub api: ApiArgs,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("cannot start the async runtime")
}

/// The manifest's text and its artifact's bytes, checked locally first so mistakes are
/// reported without a round trip.
pub fn read_bundle(manifest_path: &Path) -> anyhow::Result<(String, Option<Vec<u8>>)> {
    let text = std::fs::read_to_string(manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let manifest = FunctionManifest::from_toml_str(&text)
        .with_context(|| format!("{} is not a valid manifest", manifest_path.display()))?;
    let artifact = match manifest.artifact.as_ref().map(|a| &a.source) {
        None => None,
        Some(ArtifactSource::Url(url)) => {
            bail!(
                "artifact.url ({url}) is not supported by `gpufn deploy` yet: build the program and use artifact.path"
            )
        }
        Some(ArtifactSource::Path(path)) => {
            let folder = manifest_path.parent().unwrap_or(Path::new("."));
            let file = folder.join(path);
            let bytes = std::fs::read(&file).with_context(|| {
                format!(
                    "cannot read the artifact {} named by artifact.path; build it first (see the function's README)",
                    file.display()
                )
            })?;
            Some(bytes)
        }
    };
    Ok((text, artifact))
}

pub fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let (text, artifact) = read_bundle(&args.manifest)?;
    let client = args.api.client()?;
    let answer = runtime()?.block_on(client.deploy(&text, artifact.as_deref()))?;
    let answer = answer.ok().map_err(explain)?;
    let v = answer.json();
    println!(
        "deployed {} version {} ({})",
        v["name"].as_str().unwrap_or("?"),
        v["version"],
        v["protocol"].as_str().unwrap_or("?")
    );
    println!(
        "  invoke: gpufn invoke {} --data @INPUT > OUTPUT",
        v["name"].as_str().unwrap_or("NAME")
    );
    Ok(())
}

/// The request body named by `--data`.
fn request_body(data: Option<&str>) -> anyhow::Result<Vec<u8>> {
    match data {
        None => Ok(Vec::new()),
        Some("@-") => {
            let mut buffer = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buffer)
                .context("cannot read stdin")?;
            Ok(buffer)
        }
        Some(d) => match d.strip_prefix('@') {
            Some(file) => std::fs::read(file).with_context(|| format!("cannot read {file}")),
            None => Ok(d.as_bytes().to_vec()),
        },
    }
}

/// Invokes the function, writes its answer to stdout; returns the exit code.
pub fn invoke(args: InvokeArgs) -> anyhow::Result<i32> {
    let body = request_body(args.data.as_deref())?;
    let client = args.api.client()?;
    let path = match args.path.as_str() {
        "" => String::new(),
        p if p.starts_with('/') => p.to_owned(),
        p => format!("/{p}"),
    };
    let answer = runtime()?.block_on(client.invoke(&args.name, &path, Bytes::from(body)))?;
    if args.verbose {
        print_timings(&answer);
    }
    if answer.status.is_success() {
        std::io::stdout()
            .write_all(&answer.body)
            .context("cannot write the answer to stdout")?;
        return Ok(0);
    }
    let v = answer.json();
    if v["error"].is_object() {
        eprintln!(
            "gpufn invoke: {} ({}): {}",
            answer.status,
            v["error"]["code"].as_str().unwrap_or("?"),
            v["error"]["message"].as_str().unwrap_or("")
        );
        if let Some(tail) = v["error"]["details"]["stderr_tail"].as_str()
            && !tail.is_empty()
        {
            eprintln!("--- the function's stderr (end) ---\n{tail}");
        }
        if let Some(retry) = answer.headers.get("retry-after") {
            eprintln!("retry after {} s", retry.to_str().unwrap_or("?"));
        }
    } else {
        // An http function's own error answer: pass it through.
        std::io::stdout().write_all(&answer.body).ok();
        eprintln!("gpufn invoke: the function answered {}", answer.status);
    }
    Ok(1)
}

fn print_timings(answer: &Answer) {
    let get = |name: &str| answer.timing_ms(name).unwrap_or(0.0);
    eprintln!(
        "status {}  instance {}  queue {:.1} ms  cold start {:.1} ms  swap-in {:.1} ms  exec {:.1} ms",
        answer.status,
        answer
            .headers
            .get("x-gpufn-instance")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-"),
        get("x-gpufn-queue-ms"),
        get("x-gpufn-cold-start-ms"),
        get("x-gpufn-swap-in-ms"),
        get("x-gpufn-exec-ms"),
    );
}

fn explain(e: gpufn_gateway::client::ClientError) -> anyhow::Error {
    anyhow::Error::msg(e.to_string())
}

pub fn list(args: ListArgs) -> anyhow::Result<()> {
    let client = args.api.client()?;
    let answer = runtime()?.block_on(client.get("/v1/functions"))?;
    let v = answer.ok().map_err(explain)?.json();
    let rows: Vec<[String; 6]> = v["functions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            [
                f["name"].as_str().unwrap_or("?").to_owned(),
                f["version"].to_string(),
                f["protocol"].as_str().unwrap_or("-").to_owned(),
                f["instances"].as_array().map_or(0, Vec::len).to_string(),
                f["in_flight"].to_string(),
                f["queued"].to_string(),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no functions; deploy one with `gpufn deploy PATH/function.toml`");
        return Ok(());
    }
    print!(
        "{}",
        table(
            &[
                "NAME",
                "VERSION",
                "PROTOCOL",
                "INSTANCES",
                "IN FLIGHT",
                "QUEUED"
            ],
            &rows
        )
    );
    Ok(())
}

fn table(header: &[&str; 6], rows: &[[String; 6]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
            + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

pub fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let client = args.api.client()?;
    let mut path = format!("/v1/functions/{}/logs?tail={}", args.name, args.tail);
    if let Some(i) = args.instance {
        path.push_str(&format!("&instance={i}"));
    }
    let answer = runtime()?.block_on(client.get(&path))?;
    let v: Value = answer.ok().map_err(explain)?.json();
    for line in v["lines"].as_array().into_iter().flatten() {
        println!(
            "[{} {}] {}",
            line["instance"],
            line["stream"].as_str().unwrap_or("?"),
            line["text"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_argument_is_text_or_a_file() {
        assert_eq!(request_body(None).unwrap(), b"");
        assert_eq!(request_body(Some("1 2\n")).unwrap(), b"1 2\n");
        let dir = std::env::temp_dir().join(format!("gpufn-invoke-{}", std::process::id()));
        std::fs::write(&dir, b"from a file").unwrap();
        let arg = format!("@{}", dir.display());
        assert_eq!(request_body(Some(&arg)).unwrap(), b"from a file");
        std::fs::remove_file(&dir).unwrap();
        assert!(request_body(Some("@/no/such/file")).is_err());
    }

    #[test]
    fn a_bundle_reads_the_artifact_next_to_the_manifest() {
        let dir = std::env::temp_dir().join(format!("gpufn-bundle-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("build")).unwrap();
        let manifest = dir.join("function.toml");
        std::fs::write(
            &manifest,
            "name = \"t\"\ncommand = \"./build/t\"\n[artifact]\npath = \"build/t\"\n[protocol]\ntype = \"exec\"\n",
        )
        .unwrap();
        let missing = read_bundle(&manifest).unwrap_err();
        assert!(format!("{missing:#}").contains("build it first"));
        std::fs::write(dir.join("build/t"), b"program").unwrap();
        let (_, artifact) = read_bundle(&manifest).unwrap();
        assert_eq!(artifact.as_deref(), Some(&b"program"[..]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
