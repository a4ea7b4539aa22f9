# Renders the cloud-init configuration of one gpufn machine: a systemd unit that runs the
# gpufn CLI for the machine's role, a oneshot unit that prepares the machine at every boot
# (secrets, local disks) and the files both read. Provider-free, so any cloud module (and
# `terraform test`) can use it.

locals {
  etc_dir          = "/etc/gpufn"
  run_dir          = "/run/gpufn"
  prepare_script   = "/usr/local/lib/gpufn/gpufn-prepare.sh"
  env_file         = "${local.etc_dir}/gpufn.env"
  prepare_conf     = "${local.etc_dir}/prepare.conf"
  secrets_list     = "${local.etc_dir}/secrets.list"
  unit_name        = "gpufn-${var.role}.service"
  prepare_unit     = "gpufn-prepare.service"
  token_file       = "${local.run_dir}/token"
  tls_cert_file    = "${local.run_dir}/tls-cert.pem"
  tls_key_file     = "${local.run_dir}/tls-key.pem"
  signing_key_file = "${local.run_dir}/signing-key"

  flags = local.cli.flags

  role_args = {
    gateway = [
      local.flags.listen_http, var.gateway_listen_http,
      local.flags.listen_quic, var.gateway_listen_quic,
      local.flags.data_dir, var.data_dir,
      local.flags.tls_cert, local.tls_cert_file,
      local.flags.tls_key, local.tls_key_file,
      local.flags.signing_key_file, local.signing_key_file,
      local.flags.default_qos, var.default_qos,
      local.flags.function_idle_timeout, var.function_idle_timeout,
    ]
    worker = [
      local.flags.gateway, coalesce(var.gateway_address, "unset"),
      local.flags.token_file, local.token_file,
      local.flags.swap_dir, var.swap_dir,
      local.flags.idle_timeout, var.idle_timeout,
      local.flags.listen, var.worker_listen,
      local.flags.default_qos, var.default_qos,
    ]
    client = []
  }

  # The client's program comes after `--` so that its own flags are not read by gpufn.
  command = concat(
    [local.cli.binary, local.cli.subcommands[var.role]],
    local.role_args[var.role],
    var.extra_args,
    var.role == "client" ? concat(["--"], var.client_command) : [],
  )

  # systemd splits ExecStart= on spaces and expands % and $: quote and escape any
  # argument that is not plainly safe.
  exec_start = join(" ", [
    for arg in local.command :
    can(regex("^[A-Za-z0-9_@+=:,./\\[\\]-]+$", arg)) ? arg : format("\"%s\"", replace(replace(replace(replace(arg, "\\", "\\\\"), "\"", "\\\""), "%", "%%"), "$", "$$"))
  ])

  environment = merge(
    var.extra_env,
    { (local.cli.env.log) = var.log_level },
    var.role == "gateway" ? {} : { (local.cli.env.gateway) = var.gateway_address },
  )

  env_file_text = join("", [
    for name in sort(keys(local.environment)) :
    format("%s=\"%s\"\n", name, replace(replace(local.environment[name], "\\", "\\\\"), "\"", "\\\""))
  ])

  secrets = {
    gateway = var.gateway_secrets == null ? [] : [
      { file = "tls-cert.pem", ref = var.gateway_secrets.tls_cert },
      { file = "tls-key.pem", ref = var.gateway_secrets.tls_key },
      { file = "signing-key", ref = var.gateway_secrets.signing_key },
    ]
    worker = var.token_secret == null ? [] : [{ file = "token", ref = var.token_secret }]
    client = var.token_secret == null ? [] : [{ file = "token", ref = var.token_secret }]
  }

  secrets_list_text = join("", [
    for s in local.secrets[var.role] : "${s.file} ${s.ref.source} ${s.ref.id}\n"
  ])

  state_dirs = {
    gateway = [var.data_dir]
    worker  = [var.swap_dir]
    client  = [var.client_working_dir]
  }

  prepare_settings = {
    ROLE             = var.role
    SERVICE_USER     = var.service_user
    BINARY_URL       = var.binary_url
    BINARY_SHA256    = var.binary_sha256
    BINARY_PATH      = local.cli.binary
    RUN_DIR          = local.run_dir
    DATA_DIR         = var.data_dir
    DATA_DEVICE      = var.role == "gateway" ? (var.data_device == null ? "" : var.data_device) : ""
    SWAP_DIR         = var.swap_dir
    SWAP_DEVICE_GLOB = var.role == "worker" ? (var.swap_device_glob == null ? "" : var.swap_device_glob) : ""
    STATE_DIRS       = join(" ", local.state_dirs[var.role])
  }

  # Sourced by bash: single-quote every value.
  prepare_conf_text = join("", [
    for name in sort(keys(local.prepare_settings)) :
    format("%s='%s'\n", name, replace(local.prepare_settings[name], "'", "'\\''"))
  ])

  # Gateway and worker only write below their own directories; a client runs an
  # arbitrary program, so it gets the milder ProtectSystem=full.
  writable_paths = {
    gateway = [var.data_dir]
    worker  = [var.swap_dir]
    client  = []
  }

  service_unit = templatefile("${path.module}/templates/service.unit.tftpl", {
    description      = "gpufn ${var.role}"
    prepare_unit     = local.prepare_unit
    user             = var.service_user
    env_files        = concat([local.env_file], var.role == "client" ? ["${local.run_dir}/client.env"] : [])
    working_dir      = var.role == "client" ? var.client_working_dir : ""
    exec_start       = local.exec_start
    protect_system   = var.role == "client" ? "full" : "strict"
    writable_paths   = local.writable_paths[var.role]
    bind_low_ports   = var.role == "gateway"
    lock_host_memory = var.role == "worker"
  })

  prepare_unit_text = templatefile("${path.module}/templates/prepare.unit.tftpl", {
    script = local.prepare_script
  })

  cloud_config = {
    write_files = [
      { path = local.prepare_script, permissions = "0755", owner = "root:root", content = file("${path.module}/files/gpufn-prepare.sh") },
      { path = local.prepare_conf, permissions = "0644", owner = "root:root", content = local.prepare_conf_text },
      { path = local.secrets_list, permissions = "0644", owner = "root:root", content = local.secrets_list_text },
      { path = local.env_file, permissions = "0644", owner = "root:root", content = local.env_file_text },
      { path = "/etc/systemd/system/${local.prepare_unit}", permissions = "0644", owner = "root:root", content = local.prepare_unit_text },
      { path = "/etc/systemd/system/${local.unit_name}", permissions = "0644", owner = "root:root", content = local.service_unit },
    ]
    runcmd = concat(
      [[local.prepare_script, "install"]],
      [for c in var.first_boot_commands : ["bash", "-c", c]],
      [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", local.prepare_unit, local.unit_name],
      ],
    )
  }

  cloud_init = "#cloud-config\n${yamlencode(local.cloud_config)}"
}
