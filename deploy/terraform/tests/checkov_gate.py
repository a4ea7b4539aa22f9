#!/usr/bin/env python3
"""Turns checkov's JSON report (stdin) into a pass/fail verdict.

checkov exits 0 when a file does not parse, so a syntax error would pass silently: this
fails on any parsing error, on any failed check, and on a report that scanned nothing.

Usage: checkov -o json ... | checkov_gate.py
"""

import json
import sys


def main() -> int:
    text = sys.stdin.read()
    try:
        report = json.loads(text)
    except json.JSONDecodeError:
        print("checkov: no JSON report; its output was:\n" + text[-2000:])
        return 1
    reports = report if isinstance(report, list) else [report]
    problems = 0
    scanned = 0
    passed = 0
    for entry in reports:
        summary = entry.get("summary", {})
        kind = entry.get("check_type", "?")
        scanned += summary.get("resource_count", 0)
        passed += summary.get("passed", 0)
        if summary.get("parsing_errors", 0) > 0:
            problems += summary["parsing_errors"]
            # The JSON report does not say which files: terraform fmt and check_structure.py do.
            print(f"checkov {kind}: {summary['parsing_errors']} file(s) failed to parse (the fmt and structure steps name them)")
        for failed in entry.get("results", {}).get("failed_checks", []):
            problems += 1
            lines = failed.get("file_line_range") or ["?", "?"]
            print(f"checkov {kind}: {failed['check_id']} {failed['check_name']}\n"
                  f"    {failed.get('resource')} in {failed.get('file_path')}:{lines[0]}-{lines[1]}")
    if scanned == 0:
        print("checkov: the report covers no resource; was the right directory scanned?")
        problems += 1
    print(f"checkov: {passed} passed, {problems} failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
