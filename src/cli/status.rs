//! `gpufn status`: the pool as a table (workers, devices, sessions and their swap state).

use anyhow::Context;
use clap::Args;
use serde_json::Value;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The gateway's HTTP API.
    #[arg(long, env = "GPUFN_API", default_value = "http://127.0.0.1:7080")]
    pub api: String,
    /// A token (any scope; admins see every tenant's sessions).
    #[arg(long, env = "GPUFN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let token = args
        .token
        .context("no token: pass --token or set GPUFN_TOKEN (`gpufn up` prints one)")?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let pool = runtime.block_on(gpufn_gateway::client::get_json(
        &args.api,
        "/v1/pool",
        Some(&token),
    ))?;
    print!("{}", render(&pool));
    Ok(())
}

fn gib(bytes: &Value) -> String {
    format!(
        "{:.1} GiB",
        bytes.as_u64().unwrap_or(0) as f64 / (1u64 << 30) as f64
    )
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
            + "\n"
    };
    out += &line(header.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

/// The `/v1/pool` answer as two tables.
pub fn render(pool: &Value) -> String {
    let empty = Vec::new();
    let mut devices = Vec::new();
    for w in pool["workers"].as_array().unwrap_or(&empty) {
        for d in w["devices"].as_array().unwrap_or(&empty) {
            let s = &d["sessions"];
            devices.push(vec![
                w["id"].as_str().unwrap_or("?").to_owned(),
                format!("{}", d["index"]),
                d["name"].as_str().unwrap_or("?").to_owned(),
                d["backend"].as_str().unwrap_or("?").to_owned(),
                w["status"].as_str().unwrap_or("?").to_owned(),
                format!(
                    "{} / {}",
                    gib(&d["resident_bytes"]),
                    gib(&d["memory_bytes"])
                ),
                format!(
                    "{} resident, {} waiting, {} swapped out",
                    s["resident"], s["waiting"], s["swapped_out"]
                ),
                w["address"].as_str().unwrap_or("?").to_owned(),
            ]);
        }
    }
    let mut out = String::new();
    if devices.is_empty() {
        out += "no workers registered: start one with `gpufn worker --gateway ADDR`\n";
    } else {
        out += &table(
            &[
                "WORKER",
                "GPU",
                "NAME",
                "BACKEND",
                "STATUS",
                "MEMORY (resident/total)",
                "SESSIONS",
                "ADDRESS",
            ],
            &devices,
        );
    }
    let sessions: Vec<Vec<String>> = pool["sessions"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|s| {
            vec![
                format!("{}", s["id"]),
                s["tenant"].as_str().unwrap_or("?").to_owned(),
                s["function"].as_str().unwrap_or("-").to_owned(),
                format!("{}/gpu{}", s["worker"].as_str().unwrap_or("?"), s["device"]),
                s["state"].as_str().unwrap_or("?").to_owned(),
                gib(&s["vram_bytes"]),
                format!("{}%", s["compute_percent"]),
                s["qos"].as_str().unwrap_or("?").to_owned(),
            ]
        })
        .collect();
    out += "\n";
    if sessions.is_empty() {
        out += "no live sessions\n";
    } else {
        out += &table(
            &[
                "SESSION", "TENANT", "FUNCTION", "DEVICE", "STATE", "VRAM", "COMPUTE", "QOS",
            ],
            &sessions,
        );
    }
    out
}
