//! Deployed functions: the deploy request, the bundle on disk and the durable record.
//!
//! A deploy is `POST /v1/functions` with `{"manifest": "<function.toml text>", "artifact":
//! "<base64 of the file named by artifact.path>"}`. The artifact is written to
//! `DATA_DIR/functions/<tenant>/<name>/v<version>/<artifact.path>` (executable) and the
//! record — tenant, name, manifest text, artifact hash, version — to the `functions` table of
//! the state store, so deployed functions survive a restart.

use std::path::{Component, Path, PathBuf};

use base64::Engine;
use http::StatusCode;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::manifest::{ArtifactSource, FunctionManifest};
use crate::store::{Store, StoreError};

/// A deployed function as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FunctionRecord {
    pub tenant: String,
    pub name: String,
    /// The manifest's text as deployed.
    pub manifest: String,
    /// Lowercase hex SHA-256 of the artifact, when the function has one.
    pub artifact_sha256: Option<String>,
    /// 1 for the first deploy, one more for each redeploy.
    pub version: u64,
    pub deployed_at_ms: i64,
}

/// The body of `POST /v1/functions`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    pub manifest: String,
    /// Base64 (standard alphabet) of the artifact file.
    #[serde(default)]
    pub artifact: Option<String>,
}

impl DeployRequest {
    /// The request body for a manifest and its artifact's bytes (for clients).
    pub fn encode(manifest: &str, artifact: Option<&[u8]>) -> Vec<u8> {
        let request = DeployRequest {
            manifest: manifest.to_owned(),
            artifact: artifact.map(|a| base64::engine::general_purpose::STANDARD.encode(a)),
        };
        serde_json::to_vec(&request).unwrap_or_default()
    }
}

/// A deploy that passed every check: the manifest and the artifact's bytes.
#[derive(Debug)]
pub struct CheckedDeploy {
    pub manifest: FunctionManifest,
    pub manifest_text: String,
    pub artifact: Option<(PathBuf, Vec<u8>, String)>,
}

/// Parses and checks a deploy body; every refusal names the problem and the fix.
pub fn check_deploy(body: &[u8]) -> Result<CheckedDeploy, ApiError> {
    let request: DeployRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid deploy body ({e}); send {{\"manifest\": \"<function.toml text>\", \"artifact\": \"<base64>\"}} (`gpufn deploy` does)"
        ))
    })?;
    let manifest = FunctionManifest::from_toml_str(&request.manifest).map_err(manifest_error)?;
    let artifact = match (&manifest.artifact, request.artifact) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(ApiError::bad_request(
                "an artifact was sent but the manifest has no [artifact]; add [artifact] path = \"…\" or send none",
            ));
        }
        (Some(a), data) => {
            let path = match &a.source {
                ArtifactSource::Path(p) => bundle_path(p)?,
                ArtifactSource::Url(url) => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "unsupported_artifact",
                        format!(
                            "artifact.url ({url}) is not fetched by this gateway yet; build the program and deploy it with artifact.path"
                        ),
                    ));
                }
            };
            let data = data.ok_or_else(|| {
                ApiError::bad_request(format!(
                    "the manifest names artifact.path = {:?} but the deploy carries no artifact; send its bytes base64-encoded in \"artifact\"",
                    path.display()
                ))
            })?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data.as_bytes())
                .map_err(|e| {
                    ApiError::bad_request(format!(
                        "the artifact is not valid base64 ({e}); encode the file with the standard alphabet"
                    ))
                })?;
            let hash = sha256_hex(&bytes);
            if let Some(expected) = &a.sha256
                && *expected != hash
            {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "artifact_hash_mismatch",
                    format!(
                        "the artifact's SHA-256 is {hash} but the manifest pins {expected}; rebuild, or update artifact.sha256"
                    ),
                ));
            }
            Some((path, bytes, hash))
        }
    };
    Ok(CheckedDeploy {
        manifest,
        manifest_text: request.manifest,
        artifact,
    })
}

fn manifest_error(e: crate::manifest::ManifestError) -> ApiError {
    use crate::manifest::ManifestError;
    let details = match &e {
        ManifestError::Syntax { .. } => serde_json::json!({ "problems": [] }),
        ManifestError::Invalid { problems } => serde_json::json!({
            "problems": problems
                .iter()
                .map(|p| serde_json::json!({"field": p.field, "reason": p.reason, "fix": p.fix}))
                .collect::<Vec<_>>(),
        }),
    };
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_manifest", e.to_string()).with_details(details)
}

/// `artifact.path` as a relative path inside the bundle: no absolute paths, no `..`.
pub fn bundle_path(path: &str) -> Result<PathBuf, ApiError> {
    let p = Path::new(path);
    let mut clean = PathBuf::new();
    for component in p.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            _ => {
                return Err(ApiError::bad_request(format!(
                    "artifact.path {path:?} must be relative and stay inside the function's folder (no '/' at the start, no '..')"
                )));
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(ApiError::bad_request(format!(
            "artifact.path {path:?} names no file"
        )));
    }
    Ok(clean)
}

pub fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `DATA_DIR/functions/<tenant>/<name>/`: the tenant's name is hex-encoded so no tenant name
/// can leave the folder.
pub fn function_dir(root: &Path, tenant: &str, name: &str) -> PathBuf {
    let tenant_hex: String = tenant.bytes().map(|b| format!("{b:02x}")).collect();
    root.join(format!("t-{tenant_hex}")).join(name)
}

/// Where one version's files live.
pub fn bundle_dir(root: &Path, tenant: &str, name: &str, version: u64) -> PathBuf {
    function_dir(root, tenant, name).join(format!("v{version}"))
}

/// Writes the artifact into a fresh bundle folder, executable.
pub fn write_bundle(
    dir: &Path,
    artifact: Option<&(PathBuf, Vec<u8>, String)>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    if let Some((path, bytes, _)) = artifact {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, bytes)?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

impl Store {
    /// Stores a deploy as the next version of `tenant/name`; returns the record.
    pub fn put_function(
        &self,
        tenant: &str,
        name: &str,
        manifest: &str,
        artifact_sha256: Option<&str>,
        now_ms: i64,
    ) -> Result<FunctionRecord, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let previous: Option<i64> = tx
                .query_row(
                    "SELECT version FROM functions WHERE tenant = ?1 AND name = ?2",
                    params![tenant, name],
                    |r| r.get(0),
                )
                .optional()?;
            let version = previous.unwrap_or(0) + 1;
            tx.execute(
                "INSERT INTO functions (tenant, name, manifest, artifact_sha256, version, deployed_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (tenant, name) DO UPDATE SET manifest = ?3, artifact_sha256 = ?4,
                     version = ?5, deployed_at_ms = ?6",
                params![tenant, name, manifest, artifact_sha256, version, now_ms],
            )?;
            tx.commit()?;
            Ok(FunctionRecord {
                tenant: tenant.to_owned(),
                name: name.to_owned(),
                manifest: manifest.to_owned(),
                artifact_sha256: artifact_sha256.map(str::to_owned),
                version: version as u64,
                deployed_at_ms: now_ms,
            })
        })
    }

    pub fn function(&self, tenant: &str, name: &str) -> Result<Option<FunctionRecord>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT tenant, name, manifest, artifact_sha256, version, deployed_at_ms
                 FROM functions WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
                function_row,
            )
            .optional()
        })
    }

    /// A tenant's functions (every tenant's with `None`), by name.
    pub fn functions(&self, tenant: Option<&str>) -> Result<Vec<FunctionRecord>, StoreError> {
        self.with(|c| {
            let mut statement = c.prepare(
                "SELECT tenant, name, manifest, artifact_sha256, version, deployed_at_ms
                 FROM functions WHERE ?1 IS NULL OR tenant = ?1 ORDER BY tenant, name",
            )?;
            let rows = statement.query_map(params![tenant], function_row)?;
            rows.collect()
        })
    }

    /// Removes a function's record; false if there was none.
    pub fn delete_function(&self, tenant: &str, name: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            Ok(c.execute(
                "DELETE FROM functions WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
            )? > 0)
        })
    }
}

fn function_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FunctionRecord> {
    Ok(FunctionRecord {
        tenant: r.get(0)?,
        name: r.get(1)?,
        manifest: r.get(2)?,
        artifact_sha256: r.get(3)?,
        version: r.get::<_, i64>(4)? as u64,
        deployed_at_ms: r.get(5)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "name = \"tool\"\ncommand = \"./bin/tool\"\n[artifact]\npath = \"bin/tool\"\n[protocol]\ntype = \"exec\"\n";

    #[test]
    fn a_deploy_carries_its_artifact_and_its_hash() {
        let body = DeployRequest::encode(MANIFEST, Some(b"#!/bin/sh\necho hi\n"));
        let deploy = check_deploy(&body).unwrap();
        let (path, bytes, hash) = deploy.artifact.unwrap();
        assert_eq!(path, PathBuf::from("bin/tool"));
        assert_eq!(bytes, b"#!/bin/sh\necho hi\n");
        assert_eq!(hash, sha256_hex(b"#!/bin/sh\necho hi\n"));
        assert_eq!(deploy.manifest.name, "tool");
    }

    #[test]
    fn bad_deploys_are_refused_with_the_reason() {
        let missing = check_deploy(&DeployRequest::encode(MANIFEST, None)).unwrap_err();
        assert!(missing.message.contains("carries no artifact"), "{missing}");
        let pinned = MANIFEST.replace(
            "path = \"bin/tool\"",
            &format!("path = \"bin/tool\"\nsha256 = \"{}\"", "0".repeat(64)),
        );
        let wrong = check_deploy(&DeployRequest::encode(&pinned, Some(b"x"))).unwrap_err();
        assert_eq!(wrong.code, "artifact_hash_mismatch");
        let invalid = check_deploy(&DeployRequest::encode(
            "name = \"X\"\ncommand = \"\"\n[protocol]\ntype = \"exec\"\n",
            None,
        ))
        .unwrap_err();
        assert_eq!(invalid.code, "invalid_manifest");
        assert_eq!(
            invalid.details.unwrap()["problems"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(check_deploy(b"{").unwrap_err().code, "bad_request");
        let escape = MANIFEST.replace("path = \"bin/tool\"", "path = \"../../etc/passwd\"");
        let refused = check_deploy(&DeployRequest::encode(&escape, Some(b"x"))).unwrap_err();
        assert!(refused.message.contains("stay inside"), "{refused}");
    }

    #[test]
    fn tenant_folders_cannot_escape_the_data_directory() {
        let dir = function_dir(Path::new("/data/functions"), "..", "f");
        assert_eq!(dir, PathBuf::from("/data/functions/t-2e2e/f"));
    }

    #[test]
    fn records_are_versioned_per_tenant_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(
                store.put_function("a", "f", "m1", None, 1).unwrap().version,
                1
            );
            assert_eq!(
                store
                    .put_function("a", "f", "m2", Some("ab"), 2)
                    .unwrap()
                    .version,
                2
            );
            store.put_function("b", "f", "other", None, 3).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let f = store.function("a", "f").unwrap().unwrap();
        assert_eq!((f.manifest.as_str(), f.version), ("m2", 2));
        assert_eq!(store.functions(Some("a")).unwrap().len(), 1);
        assert_eq!(store.functions(None).unwrap().len(), 2);
        assert!(store.delete_function("a", "f").unwrap());
        assert!(!store.delete_function("a", "f").unwrap());
        assert!(store.function("a", "f").unwrap().is_none());
        assert!(store.function("b", "f").unwrap().is_some());
    }
}
