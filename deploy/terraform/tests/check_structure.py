#!/usr/bin/env python3
"""Structural checks of the gpufn Terraform code that need no provider and no network.

`terraform validate` cannot check a module that uses a provider without downloading it,
so this script checks what can be checked from the HCL alone (parsed with python-hcl2):

  parse        every .tf / .tftest.hcl file parses
  docs         every variable has a type and a description, every output a description
  refs         every var./local./module./data./resource reference names something declared
  calls        every local module call passes only declared inputs and all required ones,
               and reads only outputs the called module declares
  contract     the public modules keep their required inputs and outputs (CONTRACTS)
  providers    modules configure no provider; required_version and pinned providers
  secrets      no secret literal (keys, tokens, passwords) anywhere, secret-like inputs
               are sensitive and have no default
  regions      no hard-coded cloud region or zone
  hardening    IMDSv2 only, encrypted disks, no public IPs on workers, no ingress from
               0.0.0.0/0 to instances, no wildcard IAM actions or resources
  readme       README.md's variable reference matches the code (tests/variables_doc.py)

Usage: check_structure.py [ROOT]   (ROOT defaults to deploy/terraform next to this file)
Exit status 0 when no finding, 1 otherwise; each finding is printed as FILE: RULE: message.
"""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import hcl2
from hcl2.utils import SerializationOptions

PARSE_OPTIONS = SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True
)

# Inputs that must stay required (no default) and outputs that must exist: the README
# and the examples depend on them.
CONTRACTS = {
    "modules/worker-config": {
        "required": {"role", "binary_url", "binary_sha256"},
        "optional": {"gateway_address", "token_secret", "gateway_secrets", "swap_dir",
                     "swap_device_glob", "idle_timeout", "default_qos", "data_dir"},
        "outputs": {"cloud_init", "service_unit", "service_name", "command", "environment",
                    "secrets_list", "cli"},
    },
    "modules/gpu-pool-aws": {
        "required": {"name", "vpc_id", "subnet_ids", "ami_id", "binary_url", "binary_sha256",
                     "gateway_address", "worker_token_secret_arn", "gateway_security_group_id"},
        "optional": {"instance_types", "min_size", "max_size", "desired_capacity",
                     "capacity_type", "use_instance_store_for_swap", "client_security_group_ids",
                     "idle_timeout"},
        "outputs": {"autoscaling_group_name", "launch_template_id", "security_group_id",
                    "iam_role_arn", "worker_port", "user_data"},
    },
    "modules/gateway-aws": {
        "required": {"name", "vpc_id", "subnet_id", "lb_subnet_ids", "ami_id", "binary_url",
                     "binary_sha256", "tls_cert_secret_arn", "tls_key_secret_arn",
                     "signing_key_secret_arn", "client_cidr_blocks"},
        "optional": {"instance_type", "data_volume_size_gb", "http_certificate_arn",
                     "member_security_group_ids", "http_port", "quic_port"},
        "outputs": {"http_endpoint", "quic_endpoint", "private_quic_address",
                    "security_group_id", "data_volume_id", "user_data"},
    },
    "modules/gpu-pool-gcp": {
        "required": {"name", "project", "region", "network", "subnetwork", "zones",
                     "binary_url", "binary_sha256", "gateway_address", "worker_token_secret"},
        "optional": {"machine_type", "accelerator_type", "accelerator_count", "target_size",
                     "spot", "local_ssd_count"},
        "outputs": {"instance_group_manager", "instance_template", "service_account_email",
                    "network_tag", "user_data"},
    },
    "examples/comfyui-lab": {
        "required": {"region", "vpc_id", "private_subnet_ids", "public_subnet_ids",
                     "binary_url", "binary_sha256", "worker_token_secret_arn",
                     "session_token_secret_arn"},
        "optional": {"lab_vm_count"},
        "outputs": {"http_endpoint", "comfyui_urls"},
    },
}

MODULE_META_ARGS = {"source", "version", "providers", "count", "for_each", "depends_on"}
RESOURCE_PREFIXES = ("aws_", "google_", "terraform_data", "null_")

# Secret material that must never appear in the code.
SECRET_PATTERNS = {
    "AWS access key ID": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "PEM private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "JSON web token": re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),
    "Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b"),
    "GCP service account key": re.compile(r"\"private_key_id\"\s*:"),
}
SECRET_ATTRIBUTES = {"password", "secret_key", "access_key", "secret_string", "private_key",
                     "token", "api_key", "client_secret", "secret_access_key"}
# Input names that would carry a secret value (references to secrets end in _arn, _id,
# _secret, _secrets or _ref and are fine).
SECRET_VARIABLE = re.compile(r"(password|passphrase|private_key|secret_key|access_key|api_key|token_value|^token$)")
SECRET_REFERENCE = re.compile(r"(_arn|_id|_secret|_secrets|_ref|_name)$")

REGION = re.compile(
    r"\b((us|eu|ap|sa|ca|me|af|il|mx)-(gov-)?(north|south|east|west|central|northeast|southeast|northwest|southwest)-[0-9][a-z]?"
    r"|(us|europe|asia|australia|northamerica|southamerica|me|africa)-(north|south|east|west|central|northeast|southeast|northwest|southwest)[0-9]+(-[a-f])?)\b"
)

REFERENCE = re.compile(r"(?<![\w.\"-])(var|local|module|data)\.([A-Za-z_][\w-]*)(?:\.([A-Za-z_][\w-]*))?")
RESOURCE_REFERENCE = re.compile(r"(?<![\w.\"-])((?:aws|google|null)_[a-z0-9_]+|terraform_data)\.([A-Za-z_][\w-]*)")


@dataclass
class Module:
    """Declarations of one Terraform module (one directory of .tf files)."""

    path: Path
    variables: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    locals: set = field(default_factory=set)
    modules: dict = field(default_factory=dict)
    resources: dict = field(default_factory=dict)  # (type, name) -> body
    data: set = field(default_factory=set)
    providers: list = field(default_factory=list)
    terraform: list = field(default_factory=list)
    files: dict = field(default_factory=dict)  # file -> parsed dict


@dataclass
class Report:
    root: Path
    findings: list = field(default_factory=list)
    checks: int = 0

    def check(self, ok: bool, where: Path | str, rule: str, message: str) -> None:
        self.checks += 1
        if not ok:
            where = where.relative_to(self.root) if isinstance(where, Path) else where
            self.findings.append(f"{where}: {rule}: {message}")


def blocks(parsed: dict, kind: str):
    """Yields (label, body) for blocks such as `variable "x" {}`."""
    for entry in parsed.get(kind, []):
        for label, body in entry.items():
            yield label, body


def strings(value):
    """Every string inside a parsed value (expressions included), recursively."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


@functools.lru_cache(maxsize=None)
def parse(text: str) -> dict:
    """Parses HCL text; cached because python-hcl2 is slow and the self-tests parse the
    same files many times. Callers must not modify the result."""
    return hcl2.loads(text, serialization_options=PARSE_OPTIONS)


def load_module(directory: Path, report: Report) -> Module:
    module = Module(directory)
    for tf in sorted(directory.glob("*.tf")):
        try:
            parsed = parse(tf.read_text())
        except Exception as error:  # lark raises several unrelated exception types
            report.check(False, tf, "parse", f"not valid HCL: {str(error).splitlines()[0]}")
            continue
        module.files[tf] = parsed
        for name, body in blocks(parsed, "variable"):
            module.variables[name] = (tf, body)
        for name, body in blocks(parsed, "output"):
            module.outputs[name] = (tf, body)
        for entry in parsed.get("locals", []):
            module.locals.update(entry)
        for name, body in blocks(parsed, "module"):
            module.modules[name] = (tf, body)
        for kind, named in blocks(parsed, "resource"):
            for name, body in named.items():
                module.resources[(kind, name)] = (tf, body)
        for kind, named in blocks(parsed, "data"):
            for name in named:
                module.data.add((kind, name))
        for name, body in blocks(parsed, "provider"):
            module.providers.append((tf, name, body))
        module.terraform.extend((tf, body) for body in parsed.get("terraform", []))
    return module


def check_docs(module: Module, report: Report) -> None:
    for name, (tf, body) in module.variables.items():
        report.check("type" in body, tf, "docs", f"variable {name} has no type")
        report.check(bool(body.get("description")), tf, "docs", f"variable {name} has no description")
    for name, (tf, body) in module.outputs.items():
        report.check(bool(body.get("description")), tf, "docs", f"output {name} has no description")


# Names that look like references but are bound by the language (dynamic blocks, for
# expressions) are never of the form var./local./module./data., so they need no care.
def check_references(module: Module, modules: dict, report: Report) -> None:
    for tf, parsed in module.files.items():
        for text in strings(parsed):
            for kind, name, attribute in REFERENCE.findall(text):
                if kind == "var":
                    report.check(name in module.variables, tf, "refs", f"var.{name} is not declared")
                elif kind == "local":
                    report.check(name in module.locals, tf, "refs", f"local.{name} is not declared")
                elif kind == "module":
                    report.check(name in module.modules, tf, "refs", f"module.{name} is not declared")
                    target = called_module(module, name, modules)
                    if target is not None and attribute:
                        report.check(attribute in target.outputs, tf, "refs",
                                     f"module.{name}.{attribute}: {target.path.name} has no output {attribute}")
                elif kind == "data":
                    report.check((name, attribute) in module.data, tf, "refs", f"data.{name}.{attribute} is not declared")
            for kind, name in RESOURCE_REFERENCE.findall(text):
                report.check((kind, name) in module.resources, tf, "refs", f"{kind}.{name} is not declared")


def called_module(module: Module, name: str, modules: dict) -> Module | None:
    if name not in module.modules:
        return None
    source = module.modules[name][1].get("source", "")
    if not source.startswith("."):
        return None
    return modules.get((module.path / source).resolve())


def check_calls(module: Module, modules: dict, report: Report) -> None:
    for name, (tf, body) in module.modules.items():
        source = body.get("source", "")
        if not source.startswith("."):
            report.check(False, tf, "calls", f"module {name} uses a non-local source {source!r}; it cannot be checked offline")
            continue
        target = modules.get((module.path / source).resolve())
        report.check(target is not None, tf, "calls", f"module {name}: no module at {source}")
        if target is None:
            continue
        passed = set(body) - MODULE_META_ARGS
        for unknown in sorted(passed - set(target.variables)):
            report.check(False, tf, "calls", f"module {name} passes {unknown}, which {source} does not declare")
        required = {v for v, (_, vbody) in target.variables.items() if "default" not in vbody}
        for missing in sorted(required - passed):
            report.check(False, tf, "calls", f"module {name} does not pass required input {missing} of {source}")
        report.checks += 1


def check_contract(relative: str, module: Module, report: Report) -> None:
    contract = CONTRACTS.get(relative)
    if contract is None:
        return
    for name in sorted(contract["required"]):
        declared = module.variables.get(name)
        report.check(declared is not None, module.path, "contract", f"required input {name} is missing")
        if declared:
            report.check("default" not in declared[1], declared[0], "contract",
                         f"input {name} must stay required (no default)")
    for name in sorted(contract["optional"]):
        declared = module.variables.get(name)
        report.check(declared is not None, module.path, "contract", f"input {name} is missing")
        if declared:
            report.check("default" in declared[1], declared[0], "contract", f"input {name} must keep a default")
    for name in sorted(contract["outputs"]):
        report.check(name in module.outputs, module.path, "contract", f"output {name} is missing")


def check_providers(relative: str, module: Module, report: Report) -> None:
    is_library = relative.startswith("modules/")
    if is_library:
        for tf, name, _ in module.providers:
            report.check(False, tf, "providers", f"module configures provider {name}; only root configurations (examples) may")
    required_version = any("required_version" in body for _, body in module.terraform)
    report.check(required_version, module.path, "providers", "no terraform { required_version } set")
    used = {kind.split("_", 1)[0] for kind, _ in module.resources} | {kind.split("_", 1)[0] for kind, _ in module.data}
    used &= {"aws", "google"}
    pinned = {}
    for _, body in module.terraform:
        for entry in body.get("required_providers", []):
            pinned.update(entry)
    for provider in sorted(used):
        spec = pinned.get(provider)
        report.check(isinstance(spec, dict) and bool(spec.get("version")), module.path, "providers",
                     f"provider {provider} is used but not pinned in required_providers with a version")
    for tf, name, body in module.providers:
        for key in ("access_key", "secret_key", "token", "credentials", "access_token"):
            report.check(key not in body, tf, "secrets", f"provider {name} sets {key}; use the environment or a profile")
        region = body.get("region")
        if region is not None:
            report.check(isinstance(region, str) and region.startswith("${var."), tf, "regions",
                         f"provider {name} region must come from a variable, not {region!r}")


def check_secrets(module: Module, report: Report) -> None:
    for tf in module.files:
        text = tf.read_text()
        for what, pattern in SECRET_PATTERNS.items():
            match = pattern.search(text)
            report.check(match is None, tf, "secrets", f"looks like a hard-coded {what}: {match.group(0)[:24] if match else ''}...")
    for name, (tf, body) in module.variables.items():
        if SECRET_VARIABLE.search(name) and not SECRET_REFERENCE.search(name):
            report.check("default" not in body, tf, "secrets", f"variable {name} holds a secret and must have no default")
            report.check(body.get("sensitive") is True, tf, "secrets", f"variable {name} holds a secret and must be sensitive = true")
    for (kind, name), (tf, body) in module.resources.items():
        for attribute in SECRET_ATTRIBUTES & set(body):
            value = body[attribute]
            report.check(isinstance(value, str) and value.startswith("${"), tf, "secrets",
                         f"{kind}.{name}.{attribute} is a literal; pass it through a variable or a secret store")


def check_regions(module: Module, report: Report) -> None:
    for tf in module.files:
        found = [(number, match.group(0)) for number, line in enumerate(tf.read_text().splitlines(), 1)
                 for match in [REGION.search(line)] if match]
        report.check(not found, tf, "regions", "hard-coded region or zone "
                     + ", ".join(f"{region} (line {number})" for number, region in found)
                     + "; take it from a variable or the provider")


def nested(body: dict, name: str) -> list:
    value = body.get(name, [])
    return value if isinstance(value, list) else [value]


def check_hardening(module: Module, report: Report) -> None:
    for (kind, name), (tf, body) in module.resources.items():
        label = f"{kind}.{name}"
        if kind in ("aws_instance", "aws_launch_template"):
            metadata = nested(body, "metadata_options")
            report.check(any(m.get("http_tokens") == "required" for m in metadata), tf, "hardening",
                         f"{label} must require IMDSv2 (metadata_options {{ http_tokens = \"required\" }})")
            for device in nested(body, "root_block_device") + [e for b in nested(body, "block_device_mappings") for e in nested(b, "ebs")]:
                report.check(device.get("encrypted") is True, tf, "hardening", f"{label}: every volume must set encrypted = true")
            for interface in nested(body, "network_interfaces"):
                report.check(interface.get("associate_public_ip_address") is not True, tf, "hardening",
                             f"{label} must not give instances a public IP")
            report.check(body.get("associate_public_ip_address") is not True, tf, "hardening",
                         f"{label} must not give instances a public IP")
        if kind == "aws_ebs_volume":
            report.check(body.get("encrypted") is True, tf, "hardening", f"{label} must set encrypted = true")
        if kind == "aws_vpc_security_group_ingress_rule":
            report.check(body.get("cidr_ipv4") != "0.0.0.0/0", tf, "hardening", f"{label} admits the whole internet")
    for tf, parsed in module.files.items():
        for kind, named in blocks(parsed, "data"):
            if kind != "aws_iam_policy_document":
                continue
            for name, body in named.items():
                for text in strings(body):
                    report.check(text != "*", tf, "hardening", f"data.{kind}.{name} grants a wildcard action or resource")


def module_dirs(root: Path) -> list[Path]:
    dirs = {tf.parent for tf in root.rglob("*.tf") if ".terraform" not in tf.parts}
    return sorted(dirs)


def check_test_files(root: Path, report: Report) -> None:
    for test in sorted(root.rglob("*.tftest.hcl")):
        if ".terraform" in test.parts:
            continue
        try:
            parsed = parse(test.read_text())
        except Exception as error:
            report.check(False, test, "parse", f"not valid HCL: {str(error).splitlines()[0]}")
            continue
        report.check(bool(parsed.get("run")), test, "parse", "test file has no run block")


def check_readme(root: Path, report: Report) -> None:
    import variables_doc  # imports this module: load it late

    readme = root / "README.md"
    documented = variables_doc.section(readme.read_text()) if readme.is_file() else None
    report.check(documented is not None, readme, "readme", "README.md has no generated variable reference section")
    if documented is not None:
        report.check(documented == variables_doc.render(root).strip("\n"), readme, "readme",
                     "the variable reference is out of date: run python3 deploy/terraform/tests/variables_doc.py --write")


def run(root: Path) -> Report:
    root = root.resolve()
    report = Report(root)
    modules = {d.resolve(): load_module(d, report) for d in module_dirs(root)}
    for directory, module in modules.items():
        relative = directory.relative_to(root).as_posix()
        check_docs(module, report)
        check_references(module, modules, report)
        check_calls(module, modules, report)
        check_contract(relative, module, report)
        check_providers(relative, module, report)
        check_secrets(module, report)
        check_regions(module, report)
        check_hardening(module, report)
    for relative in CONTRACTS:
        report.check((root / relative).is_dir(), relative, "contract", "module directory is missing")
    check_test_files(root, report)
    check_readme(root, report)
    return report


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent
    report = run(root)
    for finding in report.findings:
        print(finding)
    failed = len(report.findings)
    print(f"structure: {report.checks - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
