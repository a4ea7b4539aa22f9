# A GPU worker: registers with the gateway, reads its token from a secret at boot and
# keeps the swap tier on local NVMe.

variables {
  role             = "worker"
  binary_url       = "https://releases.example.com/gpufn/v0.1.0/gpufn-x86_64-linux.tar.gz"
  binary_sha256    = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
  gateway_address  = "10.0.1.10:4433"
  token_secret     = { source = "aws-ssm", id = "/gpufn/worker-token" }
  swap_device_glob = "/dev/disk/by-id/nvme-Amazon_EC2_NVMe_Instance_Storage_*"
}

run "worker_command_line" {
  command = plan

  variables {
    idle_timeout = "15s"
    default_qos  = "high"
  }

  assert {
    condition     = strcontains(output.service_unit, "ExecStart=/usr/local/bin/gpufn worker --gateway 10.0.1.10:4433 --token-file /run/gpufn/token --swap-dir /mnt/gpufn-swap --idle-timeout 15s --listen 0.0.0.0:4500 --default-qos high\n")
    error_message = "ExecStart does not run `gpufn worker` with the gateway address, token file, swap dir, idle timeout, listen address and QoS:\n${output.service_unit}"
  }

  assert {
    condition     = output.service_name == "gpufn-worker.service"
    error_message = "The worker's unit should be gpufn-worker.service, got ${output.service_name}."
  }

  assert {
    condition     = strcontains(output.service_unit, "Requires=gpufn-prepare.service") && strcontains(output.service_unit, "After=network-online.target gpufn-prepare.service")
    error_message = "The worker must start only after the boot preparation (secrets, NVMe) has run."
  }

  assert {
    condition     = strcontains(output.service_unit, "ReadWritePaths=/mnt/gpufn-swap\n") && strcontains(output.service_unit, "ProtectSystem=strict\n")
    error_message = "The worker should see a read-only system except its swap dir."
  }

  assert {
    condition     = strcontains(output.service_unit, "LimitMEMLOCK=infinity")
    error_message = "The worker needs unlimited locked memory for pinned host buffers."
  }

  assert {
    condition     = output.environment == { GPUFN_GATEWAY = "10.0.1.10:4433", GPUFN_LOG = "info" }
    error_message = "The environment should hold only GPUFN_GATEWAY and GPUFN_LOG, got ${jsonencode(output.environment)}."
  }
}

run "token_comes_from_the_secret_reference" {
  command = plan

  assert {
    condition     = output.secrets_list == "token aws-ssm /gpufn/worker-token\n"
    error_message = "secrets.list should fetch the token from SSM parameter /gpufn/worker-token, got: ${output.secrets_list}"
  }

  assert {
    condition     = !contains(keys(output.environment), "GPUFN_TOKEN") && !strcontains(one([for f in yamldecode(output.cloud_init).write_files : f.content if f.path == "/etc/gpufn/gpufn.env"]), "TOKEN")
    error_message = "The worker's environment must not carry a token (it reads --token-file)."
  }
}

run "swap_on_local_nvme" {
  command = plan

  variables {
    swap_dir = "/mnt/nvme/swap"
  }

  assert {
    condition     = strcontains(output.prepare_conf, "SWAP_DIR='/mnt/nvme/swap'\n") && strcontains(output.prepare_conf, "SWAP_DEVICE_GLOB='/dev/disk/by-id/nvme-Amazon_EC2_NVMe_Instance_Storage_*'\n")
    error_message = "prepare.conf should mount the instance-store NVMe at the swap dir:\n${output.prepare_conf}"
  }

  assert {
    condition     = strcontains(output.service_unit, "--swap-dir /mnt/nvme/swap ") && strcontains(output.service_unit, "ReadWritePaths=/mnt/nvme/swap\n")
    error_message = "The worker should use and be allowed to write /mnt/nvme/swap."
  }

  assert {
    condition     = strcontains(output.prepare_conf, "STATE_DIRS='/mnt/nvme/swap'\n") && strcontains(output.prepare_conf, "DATA_DEVICE=''\n")
    error_message = "A worker creates its swap dir and mounts no gateway data volume:\n${output.prepare_conf}"
  }
}

run "default_idle_timeout_is_ten_seconds" {
  command = plan

  assert {
    condition     = strcontains(output.service_unit, "--idle-timeout 10s ") && strcontains(output.service_unit, "--default-qos medium\n")
    error_message = "Without settings the worker should swap out after 10s idle, with QoS medium."
  }
}

run "cloud_init_installs_and_starts_the_worker" {
  command = plan

  assert {
    condition     = startswith(output.cloud_init, "#cloud-config\n")
    error_message = "cloud-init user data must start with #cloud-config."
  }

  assert {
    condition     = one([for f in yamldecode(output.cloud_init).write_files : f.content if f.path == "/etc/systemd/system/gpufn-worker.service"]) == output.service_unit
    error_message = "cloud-init must write the worker unit exactly as rendered."
  }

  assert {
    condition     = one([for f in yamldecode(output.cloud_init).write_files : f.content if f.path == "/etc/gpufn/secrets.list"]) == output.secrets_list
    error_message = "cloud-init must write secrets.list."
  }

  assert {
    condition     = one([for f in yamldecode(output.cloud_init).write_files : f.content if f.path == "/etc/gpufn/gpufn.env"]) == "GPUFN_GATEWAY=\"10.0.1.10:4433\"\nGPUFN_LOG=\"info\"\n"
    error_message = "cloud-init must write the environment file with the gateway address and log level."
  }

  assert {
    condition     = yamldecode(output.cloud_init).runcmd == [["/usr/local/lib/gpufn/gpufn-prepare.sh", "install"], ["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "gpufn-prepare.service", "gpufn-worker.service"]]
    error_message = "First boot must install the binary, then enable and start the preparation and worker units: ${jsonencode(yamldecode(output.cloud_init).runcmd)}"
  }

  assert {
    condition     = strcontains(output.prepare_conf, "BINARY_URL='https://releases.example.com/gpufn/v0.1.0/gpufn-x86_64-linux.tar.gz'\n") && strcontains(output.prepare_conf, "BINARY_SHA256='0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef'\n")
    error_message = "The binary must be installed from the release URL and checked against its SHA-256."
  }

  assert {
    condition     = length(output.cloud_init) < 16384
    error_message = "User data must stay under the 16 KiB limit of EC2 (it is ${length(output.cloud_init)} bytes)."
  }
}
