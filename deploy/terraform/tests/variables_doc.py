#!/usr/bin/env python3
"""Renders the variable and output tables of deploy/terraform/README.md from the HCL.

The README's reference section lies between the markers below; check_structure.py fails
when it differs from what this renders, so every variable stays explained.

Usage: variables_doc.py          print the tables
       variables_doc.py --write  replace the section in README.md
"""

import json
import sys
from pathlib import Path

import check_structure

BEGIN = "<!-- BEGIN GENERATED VARIABLES (tests/variables_doc.py --write) -->"
END = "<!-- END GENERATED VARIABLES -->"
DOCUMENTED = ["modules/worker-config", "modules/gpu-pool-aws", "modules/gateway-aws",
              "modules/gpu-pool-gcp", "examples/comfyui-lab"]


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace('\\"', '"').replace("\n", " ")


def default_of(body: dict) -> str:
    if "default" not in body:
        return "**required**"
    value = body["default"]
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, (list, dict)):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"


def type_of(body: dict) -> str:
    text = body.get("type", "")
    return text[2:-1] if text.startswith("${") else text


def render(root: Path) -> str:
    lines = []
    for relative in DOCUMENTED:
        module = check_structure.load_module(root / relative, check_structure.Report(root))
        lines += [f"#### `{relative}`", "", "| Variable | Type | Default | Meaning |", "|---|---|---|---|"]
        for name, (_, body) in module.variables.items():
            lines.append(f"| `{name}` | `{cell(type_of(body))}` | {default_of(body)} | {cell(body.get('description', ''))} |")
        lines += ["", "| Output | Meaning |", "|---|---|"]
        for name, (_, body) in module.outputs.items():
            lines.append(f"| `{name}` | {cell(body.get('description', ''))} |")
        lines.append("")
    return "\n".join(lines)


def section(readme_text: str) -> str | None:
    if BEGIN not in readme_text or END not in readme_text:
        return None
    return readme_text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n")


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parent.parent
    tables = render(root)
    if "--write" not in argv:
        print(tables)
        return 0
    readme = root / "README.md"
    text = readme.read_text()
    if section(text) is None:
        print(f"README.md has no {BEGIN} ... {END} section", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(f"{head}{BEGIN}\n{tables}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
