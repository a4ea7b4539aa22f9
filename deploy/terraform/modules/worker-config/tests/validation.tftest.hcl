# Invalid inputs are refused at plan time with a message, never rendered into a machine
# that boots and fails.

variables {
  role            = "worker"
  binary_url      = "https://releases.example.com/gpufn/v0.1.0/gpufn"
  binary_sha256   = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
  gateway_address = "10.0.1.10:4433"
  token_secret    = { source = "aws-secretsmanager", id = "gpufn/worker-token" }
}

run "valid_inputs_are_accepted" {
  command = plan
}

run "unknown_role" {
  command = plan
  variables { role = "scheduler" }
  expect_failures = [var.role]
}

run "plain_http_binary_url" {
  command = plan
  variables { binary_url = "http://releases.example.com/gpufn" }
  expect_failures = [var.binary_url]
}

run "shell_characters_in_binary_url" {
  command = plan
  variables { binary_url = "https://example.com/gpufn';reboot;'" }
  expect_failures = [var.binary_url]
}

run "short_sha256" {
  command = plan
  variables { binary_sha256 = "0123abcd" }
  expect_failures = [var.binary_sha256]
}

run "worker_without_gateway_address" {
  command = plan
  variables { gateway_address = null }
  expect_failures = [var.gateway_address]
}

run "gateway_address_without_port" {
  command = plan
  variables { gateway_address = "10.0.1.10" }
  expect_failures = [var.gateway_address]
}

run "worker_without_token_secret" {
  command = plan
  variables { token_secret = null }
  expect_failures = [var.token_secret]
}

run "unknown_secret_source" {
  command = plan
  variables { token_secret = { source = "vault", id = "secret/gpufn" } }
  expect_failures = [var.token_secret]
}

run "secret_reference_with_spaces" {
  command = plan
  variables { token_secret = { source = "file", id = "/etc/gpufn/token $(reboot)" } }
  expect_failures = [var.token_secret]
}

run "token_in_plain_environment" {
  command = plan
  variables { extra_env = { GPUFN_TOKEN = "plain" } }
  expect_failures = [var.extra_env]
}

run "lower_case_environment_name" {
  command = plan
  variables { extra_env = { cuda_visible_devices = "0" } }
  expect_failures = [var.extra_env]
}

run "relative_swap_dir" {
  command = plan
  variables { swap_dir = "gpufn-swap" }
  expect_failures = [var.swap_dir]
}

run "swap_dir_on_a_system_directory" {
  command = plan
  variables { swap_dir = "/var" }
  expect_failures = [var.swap_dir]
}

run "swap_device_outside_dev" {
  command = plan
  variables { swap_device_glob = "/mnt/disk*" }
  expect_failures = [var.swap_device_glob]
}

run "idle_timeout_without_unit" {
  command = plan
  variables { idle_timeout = "10" }
  expect_failures = [var.idle_timeout]
}

run "zero_idle_timeout" {
  command = plan
  variables { idle_timeout = "0s" }
  expect_failures = [var.idle_timeout]
}

run "unknown_qos" {
  command = plan
  variables { default_qos = "urgent" }
  expect_failures = [var.default_qos]
}

run "unknown_log_level" {
  command = plan
  variables { log_level = "verbose" }
  expect_failures = [var.log_level]
}

run "root_service_user" {
  command = plan
  variables { service_user = "root" }
  expect_failures = [var.service_user]
}

run "gateway_without_secrets" {
  command = plan
  variables { role = "gateway" }
  expect_failures = [var.gateway_secrets]
}

run "gateway_secret_with_unknown_source" {
  command = plan
  variables {
    role = "gateway"
    gateway_secrets = {
      tls_cert    = { source = "aws-secretsmanager", id = "gpufn/tls-cert" }
      tls_key     = { source = "env", id = "TLS_KEY" }
      signing_key = { source = "aws-ssm", id = "/gpufn/signing-key" }
    }
  }
  expect_failures = [var.gateway_secrets]
}

run "client_without_command" {
  command = plan
  variables { role = "client" }
  expect_failures = [var.client_command]
}

run "bad_data_device" {
  command = plan
  variables {
    role        = "gateway"
    data_device = "vol-0123456789abcdef0"
    gateway_secrets = {
      tls_cert    = { source = "file", id = "/etc/gpufn/tls-cert.pem" }
      tls_key     = { source = "file", id = "/etc/gpufn/tls-key.pem" }
      signing_key = { source = "file", id = "/etc/gpufn/signing-key" }
    }
  }
  expect_failures = [var.data_device]
}
