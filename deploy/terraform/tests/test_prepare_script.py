"""Behaviour of gpufn-prepare.sh, the boot script every rendered machine runs.

The script runs for real, with fake `aws`, `gcloud` and `curl` commands first on PATH and
its input files and target paths redirected into a temporary directory. Tests that
change file ownership need root (as on the machines and in CI) and are skipped otherwise.
"""

import hashlib
import io
import os
import stat
import subprocess
import tarfile
import tempfile
import shutil
import unittest
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "modules/worker-config/files/gpufn-prepare.sh"
IS_ROOT = os.geteuid() == 0

FAKE_AWS = """#!/bin/bash
# Fake aws CLI: logs its arguments; answers from $FAKE_SECRETS/<id with / as _>.
echo "$*" >>"$FAKE_LOG"
id=""
while [ $# -gt 0 ]; do
  case "$1" in --name|--secret-id) id="$2"; shift ;; esac
  shift
done
file="$FAKE_SECRETS/$(echo "$id" | tr '/:' '__')"
[ -f "$file" ] || { echo "ResourceNotFoundException: $id" >&2; exit 254; }
cat "$file"
"""

FAKE_GCLOUD = """#!/bin/bash
echo "$*" >>"$FAKE_LOG"
id="$4"
file="$FAKE_SECRETS/$(echo "$id" | tr '/:' '__')"
[ -f "$file" ] || { echo "NOT_FOUND: $id" >&2; exit 1; }
cat "$file"
"""

FAKE_CURL = """#!/bin/bash
# Fake curl: "downloads" https://host/path by copying $FAKE_DOWNLOADS/<basename>.
echo "$*" >>"$FAKE_LOG"
out=""; url=""
while [ $# -gt 0 ]; do
  case "$1" in -o) out="$2"; shift ;; https://*) url="$1" ;; esac
  shift
done
cp "$FAKE_DOWNLOADS/$(basename "$url")" "$out"
"""


class PrepareScriptTest(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="gpufn-prepare-"))
        self.bin = self.tmp / "bin"
        self.secrets = self.tmp / "secrets"
        self.downloads = self.tmp / "downloads"
        for d in (self.bin, self.secrets, self.downloads):
            d.mkdir()
        for name, text in (("aws", FAKE_AWS), ("gcloud", FAKE_GCLOUD), ("curl", FAKE_CURL)):
            path = self.bin / name
            path.write_text(text)
            path.chmod(0o755)
        self.log = self.tmp / "calls.log"
        self.log.touch()
        self.run_dir = self.tmp / "run"
        self.user = "root" if IS_ROOT else os.environ.get("USER", "nobody")

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def configure(self, secrets_list="", **settings):
        values = {
            "ROLE": "worker",
            "SERVICE_USER": self.user,
            "BINARY_URL": "https://releases.example.com/gpufn",
            "BINARY_SHA256": "0" * 64,
            "BINARY_PATH": str(self.tmp / "installed/gpufn"),
            "RUN_DIR": str(self.run_dir),
            "DATA_DIR": str(self.tmp / "data"),
            "DATA_DEVICE": "",
            "SWAP_DIR": str(self.tmp / "swap"),
            "SWAP_DEVICE_GLOB": "",
            "STATE_DIRS": str(self.tmp / "swap"),
        }
        values.update(settings)
        (self.tmp / "prepare.conf").write_text("".join(f"{k}='{v}'\n" for k, v in values.items()))
        (self.tmp / "secrets.list").write_text(secrets_list)

    def store_secret(self, ident, value):
        (self.secrets / ident.replace("/", "_").replace(":", "_")).write_text(value)

    def prepare(self, command):
        env = dict(os.environ)
        env.update({
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "GPUFN_PREPARE_CONF": str(self.tmp / "prepare.conf"),
            "GPUFN_SECRETS_LIST": str(self.tmp / "secrets.list"),
            "GPUFN_PREPARE_ATTEMPTS": "1",
            "AWS_REGION": "test-region-1",
            "FAKE_LOG": str(self.log),
            "FAKE_SECRETS": str(self.secrets),
            "FAKE_DOWNLOADS": str(self.downloads),
        })
        return subprocess.run(["bash", str(SCRIPT), command], env=env, capture_output=True, text=True)

    def test_script_is_valid_bash(self):
        result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_unknown_command_is_refused(self):
        self.configure()
        result = self.prepare("deploy")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("usage:", result.stderr)

    @unittest.skipUnless(IS_ROOT, "sets file ownership: needs root")
    def test_worker_token_from_ssm_is_written_for_the_service_only(self):
        self.configure("token aws-ssm /gpufn/worker-token\n")
        self.store_secret("/gpufn/worker-token", "jwt-of-the-worker\n")
        result = self.prepare("boot")
        self.assertEqual(result.returncode, 0, result.stderr)
        token = self.run_dir / "token"
        self.assertEqual(token.read_text(), "jwt-of-the-worker\n")
        self.assertEqual(stat.S_IMODE(token.stat().st_mode), 0o400)
        call = self.log.read_text()
        self.assertIn("ssm get-parameter --region test-region-1 --name /gpufn/worker-token --with-decryption", call)
        self.assertTrue((self.tmp / "swap").is_dir(), "the swap dir (a state dir) should be created")

    @unittest.skipUnless(IS_ROOT, "sets file ownership: needs root")
    def test_gateway_secrets_from_secrets_manager(self):
        arn = "arn:aws:secretsmanager:test-region-1:123456789012:secret:gpufn/tls-key-AbCdEf"
        self.configure(f"tls-key.pem aws-secretsmanager {arn}\nsigning-key file {self.tmp}/signing-key\n",
                       ROLE="gateway", STATE_DIRS=str(self.tmp / "data"))
        self.store_secret(arn, "PEM KEY\n")
        (self.tmp / "signing-key").write_text("signing secret\n")
        result = self.prepare("boot")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual((self.run_dir / "tls-key.pem").read_text(), "PEM KEY\n")
        self.assertEqual((self.run_dir / "signing-key").read_text(), "signing secret\n")
        self.assertIn(f"secretsmanager get-secret-value --region test-region-1 --secret-id {arn}", self.log.read_text())
        self.assertTrue((self.tmp / "data").is_dir())

    @unittest.skipUnless(IS_ROOT, "sets file ownership: needs root")
    def test_client_gets_its_token_as_environment_file(self):
        ident = "projects/lab/secrets/session-token/versions/latest"
        self.configure(f"token gcp-secretmanager {ident}\n", ROLE="client", STATE_DIRS=str(self.tmp / "app"))
        self.store_secret(ident, "session-jwt\n")
        result = self.prepare("boot")
        self.assertEqual(result.returncode, 0, result.stderr)
        env_file = self.run_dir / "client.env"
        self.assertEqual(env_file.read_text(), "GPUFN_TOKEN=session-jwt\n")
        self.assertEqual(stat.S_IMODE(env_file.stat().st_mode), 0o400)
        self.assertIn(f"secrets versions access {ident}", self.log.read_text())

    @unittest.skipUnless(IS_ROOT, "sets file ownership: needs root")
    def test_missing_secret_fails_and_names_it(self):
        self.configure("token aws-ssm /gpufn/absent\n")
        result = self.prepare("boot")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("could not read secret aws-ssm:/gpufn/absent", result.stderr)
        self.assertFalse((self.run_dir / "token").exists())

    @unittest.skipUnless(IS_ROOT, "sets file ownership: needs root")
    def test_empty_secret_fails(self):
        self.configure("token aws-ssm /gpufn/empty\n")
        self.store_secret("/gpufn/empty", "")
        result = self.prepare("boot")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("is empty", result.stderr)

    @unittest.skipUnless(IS_ROOT, "sets file ownership: needs root")
    def test_no_local_nvme_keeps_swap_on_root_disk(self):
        self.configure("", SWAP_DEVICE_GLOB=str(self.tmp / "no-such-nvme-*"))
        result = self.prepare("boot")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("the swap tier stays on the root disk", result.stderr)

    def binary(self, name, content):
        (self.downloads / name).write_bytes(content)
        return hashlib.sha256(content).hexdigest()

    @unittest.skipUnless(IS_ROOT, "creates the service user's files: needs root")
    def test_install_checks_the_sha256(self):
        digest = self.binary("gpufn", b"#!/bin/sh\necho gpufn 0.1.0\n")
        self.configure(BINARY_SHA256=digest)
        (self.tmp / "installed").mkdir()
        result = self.prepare("install")
        self.assertEqual(result.returncode, 0, result.stderr)
        installed = self.tmp / "installed/gpufn"
        self.assertEqual(installed.read_bytes(), b"#!/bin/sh\necho gpufn 0.1.0\n")
        self.assertTrue(os.access(installed, os.X_OK))

    @unittest.skipUnless(IS_ROOT, "creates the service user's files: needs root")
    def test_install_refuses_a_binary_with_another_digest(self):
        self.binary("gpufn", b"tampered")
        self.configure(BINARY_SHA256="a" * 64)
        (self.tmp / "installed").mkdir()
        result = self.prepare("install")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("refusing to install", result.stderr)
        self.assertFalse((self.tmp / "installed/gpufn").exists())

    @unittest.skipUnless(IS_ROOT, "creates the service user's files: needs root")
    def test_install_unpacks_a_release_archive(self):
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w:gz") as tar:
            data = b"#!/bin/sh\necho packed\n"
            info = tarfile.TarInfo("gpufn")
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
        digest = self.binary("gpufn-x86_64-linux.tar.gz", archive.getvalue())
        self.configure(BINARY_URL="https://releases.example.com/v0.1.0/gpufn-x86_64-linux.tar.gz",
                       BINARY_SHA256=digest)
        (self.tmp / "installed").mkdir()
        result = self.prepare("install")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual((self.tmp / "installed/gpufn").read_bytes(), b"#!/bin/sh\necho packed\n")


if __name__ == "__main__":
    unittest.main()
