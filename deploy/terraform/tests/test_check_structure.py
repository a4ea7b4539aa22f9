"""check_structure.py must pass the real tree and catch each kind of mistake it is for.

Every test copies deploy/terraform to a temporary directory, breaks one thing and
expects a finding of the matching rule, so a checker that silently stops checking fails
here.
"""

import shutil
import tempfile
import unittest
from pathlib import Path

import check_structure

TF_ROOT = Path(__file__).resolve().parent.parent


class CheckStructureTest(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="gpufn-tf-check-"))
        self.root = self.tmp / "terraform"
        shutil.copytree(TF_ROOT, self.root, ignore=shutil.ignore_patterns(".terraform", "__pycache__"))

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def append(self, relative, text):
        with (self.root / relative).open("a") as handle:
            handle.write("\n" + text + "\n")

    def replace(self, relative, old, new):
        path = self.root / relative
        content = path.read_text()
        self.assertIn(old, content, f"fixture text not found in {relative}")
        path.write_text(content.replace(old, new, 1))

    def findings(self):
        return check_structure.run(self.root).findings

    def assert_finding(self, rule, fragment):
        findings = self.findings()
        matching = [f for f in findings if f": {rule}: " in f and fragment in f]
        self.assertTrue(matching, f"expected a {rule} finding about {fragment!r}, got {findings}")

    def test_real_tree_has_no_finding(self):
        self.assertEqual(self.findings(), [])

    def test_syntax_error(self):
        self.append("modules/gpu-pool-aws/main.tf", 'resource "aws_s3_bucket" "x" {\n  bucket = \n}')
        self.assert_finding("parse", "gpu-pool-aws/main.tf")

    def test_hard_coded_access_key(self):
        self.append("examples/comfyui-lab/main.tf",
                    'locals {\n  leaked = "AKIAABCDEFGHIJKLMNOP"\n}')
        self.assert_finding("secrets", "AWS access key ID")

    def test_hard_coded_private_key(self):
        self.append("modules/gateway-aws/main.tf",
                    'locals {\n  tls_key = "-----BEGIN RSA PRIVATE KEY-----"\n}')
        self.assert_finding("secrets", "PEM private key")

    def test_secret_literal_in_resource(self):
        self.append("modules/gateway-aws/main.tf",
                    'resource "aws_secretsmanager_secret_version" "key" {\n'
                    '  secret_id     = "gpufn"\n  secret_string = "hunter2"\n}')
        self.assert_finding("secrets", "secret_string is a literal")

    def test_secret_variable_with_default(self):
        self.append("modules/gpu-pool-aws/variables.tf",
                    'variable "worker_password" {\n  description = "x"\n  type = string\n  default = "changeme"\n}')
        self.assert_finding("secrets", "worker_password holds a secret and must have no default")

    def test_hard_coded_region_in_provider(self):
        self.replace("examples/comfyui-lab/versions.tf", "region = var.region", 'region = "eu-west-1"')
        self.assert_finding("regions", "eu-west-1")

    def test_hard_coded_zone(self):
        self.append("modules/gpu-pool-gcp/main.tf", 'locals {\n  zone = "us-central1-a"\n}')
        self.assert_finding("regions", "us-central1-a")

    def test_undeclared_variable(self):
        self.replace("modules/gpu-pool-aws/main.tf", "var.worker_port}", "var.worker_prot}")
        self.assert_finding("refs", "var.worker_prot is not declared")

    def test_missing_module_output(self):
        self.replace("examples/comfyui-lab/main.tf", "module.gateway.private_quic_address",
                     "module.gateway.quic_private_address")
        self.assert_finding("refs", "gateway-aws has no output quic_private_address")

    def test_module_call_missing_required_input(self):
        self.replace("examples/comfyui-lab/main.tf",
                     "  worker_token_secret_arn   = var.worker_token_secret_arn\n", "")
        self.assert_finding("calls", "does not pass required input worker_token_secret_arn")

    def test_module_call_with_unknown_input(self):
        self.replace("examples/comfyui-lab/main.tf", "  idle_timeout = \"10s\"", "  idle_timout = \"10s\"")
        self.assert_finding("calls", "passes idle_timout")

    def test_contract_output_removed(self):
        self.replace("modules/gpu-pool-aws/outputs.tf", 'output "security_group_id"', 'output "sg_id"')
        self.assert_finding("contract", "output security_group_id is missing")

    def test_required_input_given_a_default(self):
        self.replace("modules/gateway-aws/variables.tf",
                     'variable "vpc_id" {\n  description = "VPC of the gateway."\n  type        = string\n',
                     'variable "vpc_id" {\n  description = "VPC of the gateway."\n  type        = string\n  default     = "vpc-1"\n')
        self.assert_finding("contract", "input vpc_id must stay required")

    def test_variable_without_description(self):
        self.append("modules/worker-config/variables.tf", 'variable "mystery" {\n  type = string\n  default = "x"\n}')
        self.assert_finding("docs", "variable mystery has no description")

    def test_readme_reference_out_of_date(self):
        self.replace("modules/gpu-pool-aws/variables.tf", "Fewest workers the pool keeps running", "Fewest workers")
        self.assert_finding("readme", "variable reference is out of date")

    def test_provider_configured_in_module(self):
        self.append("modules/gpu-pool-aws/versions.tf", 'provider "aws" {\n  region = var.name\n}')
        self.assert_finding("providers", "module configures provider aws")

    def test_imdsv1_allowed(self):
        self.replace("modules/gpu-pool-aws/main.tf", 'http_tokens                 = "required"',
                     'http_tokens                 = "optional"')
        self.assert_finding("hardening", "must require IMDSv2")

    def test_unencrypted_volume(self):
        self.replace("modules/gateway-aws/main.tf", "  encrypted         = true\n", "  encrypted         = false\n")
        self.assert_finding("hardening", "aws_ebs_volume.data must set encrypted = true")

    def test_ingress_from_the_internet(self):
        self.append("modules/gpu-pool-aws/main.tf",
                    'resource "aws_vpc_security_group_ingress_rule" "open" {\n'
                    '  security_group_id = aws_security_group.workers.id\n'
                    '  ip_protocol       = "-1"\n  cidr_ipv4         = "0.0.0.0/0"\n}')
        self.assert_finding("hardening", "admits the whole internet")

    def test_wildcard_iam(self):
        self.replace("modules/gpu-pool-aws/main.tf", 'actions   = ["kms:Decrypt"]', 'actions   = ["*"]')
        self.assert_finding("hardening", "wildcard")


if __name__ == "__main__":
    unittest.main()
