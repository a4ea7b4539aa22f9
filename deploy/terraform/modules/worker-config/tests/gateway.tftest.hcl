# The gateway: HTTP and QUIC listeners, TLS material and signing key from secrets,
# state on a persistent volume.

variables {
  role          = "gateway"
  binary_url    = "s3://gpufn-artifacts/releases/v0.1.0/gpufn"
  binary_sha256 = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
  gateway_secrets = {
    tls_cert    = { source = "aws-secretsmanager", id = "gpufn/gateway/tls-cert" }
    tls_key     = { source = "aws-secretsmanager", id = "gpufn/gateway/tls-key" }
    signing_key = { source = "aws-ssm", id = "/gpufn/gateway/signing-key" }
  }
  data_device = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0"
}

run "gateway_command_line" {
  command = plan

  assert {
    condition     = strcontains(output.service_unit, "ExecStart=/usr/local/bin/gpufn gateway --listen-http 0.0.0.0:8080 --listen-quic 0.0.0.0:4433 --data-dir /var/lib/gpufn --tls-cert /run/gpufn/tls-cert.pem --tls-key /run/gpufn/tls-key.pem --signing-key-file /run/gpufn/signing-key --default-qos medium --function-idle-timeout 5m\n")
    error_message = "ExecStart does not run `gpufn gateway` with its listeners, data dir, TLS files and timeouts:\n${output.service_unit}"
  }

  assert {
    condition     = output.service_name == "gpufn-gateway.service"
    error_message = "The gateway's unit should be gpufn-gateway.service."
  }

  assert {
    condition     = strcontains(output.service_unit, "ReadWritePaths=/var/lib/gpufn\n") && strcontains(output.service_unit, "AmbientCapabilities=CAP_NET_BIND_SERVICE\n")
    error_message = "The gateway may write only its data dir and may bind ports below 1024."
  }

  assert {
    condition     = !strcontains(output.service_unit, "LimitMEMLOCK")
    error_message = "Only the worker needs locked memory."
  }

  assert {
    condition     = output.environment == { GPUFN_LOG = "info" }
    error_message = "The gateway's environment should only set GPUFN_LOG, got ${jsonencode(output.environment)}."
  }
}

run "tls_and_signing_key_come_from_secrets" {
  command = plan

  assert {
    condition     = output.secrets_list == "tls-cert.pem aws-secretsmanager gpufn/gateway/tls-cert\ntls-key.pem aws-secretsmanager gpufn/gateway/tls-key\nsigning-key aws-ssm /gpufn/gateway/signing-key\n"
    error_message = "secrets.list should fetch the certificate, key and signing key from their references:\n${output.secrets_list}"
  }

  assert {
    condition     = !strcontains(output.cloud_init, "BEGIN") && !strcontains(output.cloud_init, "PRIVATE KEY")
    error_message = "No key material may appear in the user data."
  }
}

run "state_on_the_persistent_volume" {
  command = plan

  variables {
    data_dir = "/srv/gpufn"
  }

  assert {
    condition     = strcontains(output.prepare_conf, "DATA_DEVICE='/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0'\n") && strcontains(output.prepare_conf, "DATA_DIR='/srv/gpufn'\n")
    error_message = "prepare.conf should mount the EBS volume at the data dir:\n${output.prepare_conf}"
  }

  assert {
    condition     = strcontains(output.service_unit, "--data-dir /srv/gpufn ") && strcontains(output.service_unit, "ReadWritePaths=/srv/gpufn\n")
    error_message = "The gateway should use and be allowed to write /srv/gpufn."
  }

  assert {
    condition     = strcontains(output.prepare_conf, "SWAP_DEVICE_GLOB=''\n")
    error_message = "A gateway formats no NVMe swap devices."
  }
}

run "custom_listeners_and_timeouts" {
  command = plan

  variables {
    gateway_listen_http   = "0.0.0.0:443"
    gateway_listen_quic   = "[::]:4433"
    function_idle_timeout = "15m"
    log_level             = "debug"
  }

  assert {
    condition     = strcontains(output.service_unit, "--listen-http 0.0.0.0:443 --listen-quic [::]:4433 ") && strcontains(output.service_unit, "--function-idle-timeout 15m\n")
    error_message = "The listeners and function idle timeout should follow the variables:\n${output.service_unit}"
  }

  assert {
    condition     = output.environment.GPUFN_LOG == "debug"
    error_message = "GPUFN_LOG should follow log_level."
  }
}
