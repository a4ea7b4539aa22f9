output "cloud_init" {
  description = "The complete cloud-init user data (#cloud-config). Pass it base64-encoded to a launch template, or as-is to a GCE instance's user-data metadata."
  value       = local.cloud_init
}

output "service_unit" {
  description = "Text of the systemd unit that runs gpufn for this role (also written by cloud_init)."
  value       = local.service_unit
}

output "service_name" {
  description = "Name of the systemd unit, for example \"gpufn-worker.service\"."
  value       = local.unit_name
}

output "command" {
  description = "The gpufn command line the service runs, one element per argument."
  value       = local.command
}

output "environment" {
  description = "Environment variables of the service (no secrets: the token is read from token_secret at boot)."
  value       = local.environment
}

output "secrets_list" {
  description = "Text of /etc/gpufn/secrets.list: one line per secret, \"<file under /run/gpufn> <source> <id>\"."
  value       = local.secrets_list_text
}

output "prepare_conf" {
  description = "Text of /etc/gpufn/prepare.conf, the settings of the boot script."
  value       = local.prepare_conf_text
}

output "cli" {
  description = "The gpufn CLI names this module renders (binary path, subcommands, flags, environment variables)."
  value       = local.cli
}
