#!/bin/bash
# Prepares a gpufn machine. Static on purpose: every machine-specific value comes from
# /etc/gpufn/prepare.conf and /etc/gpufn/secrets.list (rendered by the worker-config
# Terraform module), so nothing here is templated.
#
#   gpufn-prepare.sh install   first boot: service user; download the gpufn binary, check its SHA-256
#   gpufn-prepare.sh boot      every boot: service user, secrets into /run/gpufn, local disks
#
# GPUFN_PREPARE_CONF and GPUFN_SECRETS_LIST override the two input files (used by tests).
# Needs bash, coreutils, curl; the aws CLI or gcloud for secrets in those clouds; blkid,
# mkfs.ext4 and mount for local disks (mdadm to stripe several).
set -euo pipefail

CONF="${GPUFN_PREPARE_CONF:-/etc/gpufn/prepare.conf}"
SECRETS_LIST="${GPUFN_SECRETS_LIST:-/etc/gpufn/secrets.list}"

log() { echo "gpufn-prepare: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# Runs "$@" up to GPUFN_PREPARE_ATTEMPTS (6) times, 2, 4, 8... seconds apart: IAM roles
# and network routes are often not ready in the first seconds after boot.
retry() {
  local attempt=1 delay=2
  until "$@"; do
    if [ "$attempt" -ge "${GPUFN_PREPARE_ATTEMPTS:-6}" ]; then
      return 1
    fi
    log "retrying in ${delay}s: $1"
    sleep "$delay"
    attempt=$((attempt + 1))
    delay=$((delay * 2))
  done
}

aws_region() {
  if [ -n "${AWS_REGION:-}" ]; then
    echo "$AWS_REGION"
    return
  fi
  local imds_token
  imds_token="$(curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token)"
  curl -fsS -H "X-aws-ec2-metadata-token: ${imds_token}" http://169.254.169.254/latest/meta-data/placement/region
}

# Writes the secret SOURCE/ID to stdout.
read_secret() {
  local source="$1" id="$2"
  case "$source" in
  aws-secretsmanager)
    aws secretsmanager get-secret-value --region "$(aws_region)" --secret-id "$id" \
      --query SecretString --output text
    ;;
  aws-ssm)
    aws ssm get-parameter --region "$(aws_region)" --name "$id" --with-decryption \
      --query Parameter.Value --output text
    ;;
  gcp-secretmanager)
    gcloud secrets versions access "$id"
    ;;
  file)
    cat "$id"
    ;;
  *)
    die "unknown secret source '$source' in $SECRETS_LIST (expected aws-secretsmanager, aws-ssm, gcp-secretmanager or file)"
    ;;
  esac
}

# Fetches one secret into DEST (readable by the service user only), atomically.
fetch_secret() {
  local dest="$1" source="$2" id="$3" tmp
  tmp="$(mktemp "${dest}.XXXXXX")"
  if ! retry read_secret "$source" "$id" >"$tmp"; then
    rm -f "$tmp"
    die "could not read secret $source:$id for $dest; check that it exists and that the machine's role may read it"
  fi
  if [ ! -s "$tmp" ]; then
    rm -f "$tmp"
    die "secret $source:$id is empty; store the value in it before starting the machine"
  fi
  chown "$SERVICE_USER:" "$tmp"
  chmod 0400 "$tmp"
  mv -f "$tmp" "$dest"
}

fetch_secrets() {
  install -d -m 0750 -o root -g "$SERVICE_USER" "$RUN_DIR"
  local dest source id
  while read -r dest source id; do
    case "$dest" in '' | '#'*) continue ;; esac
    fetch_secret "$RUN_DIR/$dest" "$source" "$id"
  done <"$SECRETS_LIST"
  # A client's program reads its token from the environment (GPUFN_TOKEN).
  if [ "$ROLE" = client ]; then
    umask 077
    printf 'GPUFN_TOKEN=%s\n' "$(tr -d '\n' <"$RUN_DIR/token")" >"$RUN_DIR/client.env"
    chown "$SERVICE_USER:" "$RUN_DIR/client.env"
    chmod 0400 "$RUN_DIR/client.env"
  fi
}

ensure_user() {
  if ! id "$SERVICE_USER" >/dev/null 2>&1; then
    useradd --system --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin "$SERVICE_USER"
  fi
}

# Waits until DEVICE exists: attached volumes appear after the instance has started.
wait_for_device() {
  local device="$1" waited=0
  until [ -e "$device" ]; do
    if [ "$waited" -ge 300 ]; then
      die "device $device did not appear within 300s; check the volume attachment"
    fi
    sleep 2
    waited=$((waited + 2))
  done
}

mount_device() {
  local device="$1" dir="$2" label="$3"
  if mountpoint -q "$dir"; then
    return
  fi
  if ! blkid "$device" >/dev/null 2>&1; then
    log "formatting $device (ext4, label $label)"
    mkfs.ext4 -q -F -L "$label" "$device"
  fi
  mkdir -p "$dir"
  mount -o noatime "$device" "$dir"
}

# Local NVMe comes back empty after a stop/start, so it is set up at every boot.
mount_swap_devices() {
  local devices=() path
  for path in $SWAP_DEVICE_GLOB; do
    [ -e "$path" ] && devices+=("$(readlink -f "$path")")
  done
  if [ "${#devices[@]}" -eq 0 ]; then
    log "no device matches $SWAP_DEVICE_GLOB; the swap tier stays on the root disk"
    return
  fi
  mapfile -t devices < <(printf '%s\n' "${devices[@]}" | sort -u)
  local target="${devices[0]}"
  if [ "${#devices[@]}" -gt 1 ]; then
    if command -v mdadm >/dev/null; then
      target=/dev/md/gpufn-swap
      if [ ! -e "$target" ]; then
        log "striping ${#devices[@]} NVMe devices into $target"
        mdadm --create "$target" --run --force --level=0 --name=gpufn-swap \
          --raid-devices="${#devices[@]}" "${devices[@]}"
      fi
    else
      log "mdadm is not installed: using only $target of ${#devices[@]} NVMe devices"
    fi
  fi
  mount_device "$target" "$SWAP_DIR" gpufn-swap
}

cmd_install() {
  ensure_user
  local work
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' RETURN
  case "$BINARY_URL" in
  https://*) retry curl -fsSL --proto '=https' -o "$work/download" "$BINARY_URL" ;;
  s3://*) retry aws s3 cp --only-show-errors "$BINARY_URL" "$work/download" ;;
  gs://*) retry gcloud storage cp "$BINARY_URL" "$work/download" ;;
  *) die "binary URL $BINARY_URL is neither https://, s3:// nor gs://" ;;
  esac
  if ! echo "$BINARY_SHA256  $work/download" | sha256sum -c --status; then
    die "SHA-256 of $BINARY_URL is not $BINARY_SHA256; refusing to install it (update binary_sha256 if the release changed)"
  fi
  case "$BINARY_URL" in
  *.tar.gz | *.tgz)
    tar -xzf "$work/download" -C "$work"
    [ -f "$work/gpufn" ] || die "archive $BINARY_URL has no file named gpufn at its top level"
    install -m 0755 "$work/gpufn" "$BINARY_PATH"
    ;;
  *)
    install -m 0755 "$work/download" "$BINARY_PATH"
    ;;
  esac
  log "installed $("$BINARY_PATH" --version 2>/dev/null || echo gpufn) at $BINARY_PATH"
}

cmd_boot() {
  ensure_user
  fetch_secrets
  if [ -n "$DATA_DEVICE" ]; then
    wait_for_device "$DATA_DEVICE"
    mount_device "$DATA_DEVICE" "$DATA_DIR" gpufn-data
  fi
  if [ -n "$SWAP_DEVICE_GLOB" ]; then
    mount_swap_devices
  fi
  local dir
  for dir in $STATE_DIRS; do
    install -d -m 0750 -o "$SERVICE_USER" -g "$SERVICE_USER" "$dir"
  done
}

[ -r "$CONF" ] || die "missing $CONF (written by cloud-init from the worker-config module)"
# shellcheck source=/dev/null
. "$CONF"

case "${1:-}" in
install) cmd_install ;;
boot) cmd_boot ;;
*) die "usage: $0 install|boot" ;;
esac
