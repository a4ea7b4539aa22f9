//! `gpufn token create`: mints an HS256 token with the gateway's secret (from its data
//! directory; the secret is created there if the gateway never ran).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use gpufn_gateway::auth::{Scope, TokenMinter, generate_secret, parse_ttl};
use gpufn_gateway::config::AuthConfig;
use gpufn_gateway::core::SECRET_HS256;
use gpufn_gateway::store::Store;

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token for a tenant.
    Create(CreateArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The tenant the token acts for.
    #[arg(long)]
    pub tenant: String,
    /// Scopes (comma-separated): admin, deploy, invoke, session, worker.
    #[arg(long, value_delimiter = ',', required = true)]
    pub scope: Vec<String>,
    /// Lifetime: e.g. 30m, 12h, 7d.
    #[arg(long, default_value = "12h")]
    pub ttl: String,
    /// The gateway's data directory.
    #[arg(long, default_value = ".gpufn")]
    pub data_dir: PathBuf,
    /// Audience (must match the gateway's --audience).
    #[arg(long, default_value = "gpufn")]
    pub audience: String,
    /// Issuer (must match the gateway's --issuer).
    #[arg(long, default_value = "gpufn")]
    pub issuer: String,
}

pub fn run(command: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Create(args) = command;
    let scopes = args
        .scope
        .iter()
        .map(|s| s.trim().parse::<Scope>().map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ttl = parse_ttl(&args.ttl).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(!args.tenant.is_empty(), "--tenant must not be empty");
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let store = Store::open(&args.data_dir).with_context(|| {
        format!(
            "cannot open the gateway state in {}",
            args.data_dir.display()
        )
    })?;
    let secret = store.secret_or_create(SECRET_HS256, generate_secret)?;
    let auth = AuthConfig {
        audience: args.audience,
        issuer: args.issuer,
        ..AuthConfig::default()
    };
    println!(
        "{}",
        TokenMinter::new(&secret, &auth).mint(&args.tenant, &scopes, ttl)
    );
    Ok(())
}
