# A CPU-only machine that runs a program through the stub (`gpufn run -- PROGRAM`).

variables {
  role            = "client"
  binary_url      = "gs://gpufn-artifacts/releases/v0.1.0/gpufn"
  binary_sha256   = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
  gateway_address = "gpufn.internal:4433"
  token_secret    = { source = "gcp-secretmanager", id = "projects/lab/secrets/gpufn-session-token/versions/latest" }
  client_command  = ["python3", "/opt/ComfyUI/main.py", "--listen", "0.0.0.0"]
}

run "program_runs_through_the_stub" {
  command = plan

  assert {
    condition     = strcontains(output.service_unit, "ExecStart=/usr/local/bin/gpufn run -- python3 /opt/ComfyUI/main.py --listen 0.0.0.0\n")
    error_message = "The program should run as `gpufn run -- PROGRAM ARGS`:\n${output.service_unit}"
  }

  assert {
    condition     = output.command == ["/usr/local/bin/gpufn", "run", "--", "python3", "/opt/ComfyUI/main.py", "--listen", "0.0.0.0"]
    error_message = "Unexpected command: ${jsonencode(output.command)}"
  }

  assert {
    condition     = output.environment.GPUFN_GATEWAY == "gpufn.internal:4433"
    error_message = "The stub finds the gateway through GPUFN_GATEWAY."
  }

  assert {
    condition     = strcontains(output.service_unit, "EnvironmentFile=/etc/gpufn/gpufn.env\nEnvironmentFile=/run/gpufn/client.env\n")
    error_message = "The client reads GPUFN_TOKEN from /run/gpufn/client.env, written at boot from the secret."
  }

  assert {
    condition     = output.secrets_list == "token gcp-secretmanager projects/lab/secrets/gpufn-session-token/versions/latest\n"
    error_message = "The session token should come from GCP Secret Manager: ${output.secrets_list}"
  }

  assert {
    condition     = strcontains(output.service_unit, "WorkingDirectory=/opt/gpufn-app\n") && strcontains(output.service_unit, "Environment=HOME=/opt/gpufn-app\n") && strcontains(output.service_unit, "ProtectSystem=full\n")
    error_message = "The client runs in its working directory, which is also its HOME, with ProtectSystem=full."
  }
}

run "arguments_are_quoted_for_systemd" {
  command = plan

  variables {
    client_command = ["sh", "-c", "echo \"$HOME\" is 100% ready"]
  }

  assert {
    condition     = strcontains(output.service_unit, "ExecStart=/usr/local/bin/gpufn run -- sh -c \"echo \\\"$$HOME\\\" is 100%% ready\"\n")
    error_message = "Arguments with spaces, quotes, $ or % must be quoted and escaped for systemd:\n${output.service_unit}"
  }
}

run "first_boot_commands_run_before_the_service" {
  command = plan

  variables {
    first_boot_commands = ["git clone --depth 1 https://github.com/comfyanonymous/ComfyUI /opt/ComfyUI"]
    extra_env           = { HF_HOME = "/opt/hf" }
  }

  assert {
    condition     = yamldecode(output.cloud_init).runcmd[1] == ["bash", "-c", "git clone --depth 1 https://github.com/comfyanonymous/ComfyUI /opt/ComfyUI"]
    error_message = "first_boot_commands should run right after the binary is installed."
  }

  assert {
    condition     = yamldecode(output.cloud_init).runcmd[3] == ["systemctl", "enable", "--now", "gpufn-prepare.service", "gpufn-client.service"]
    error_message = "The client service should start after the first-boot commands."
  }

  assert {
    condition     = output.environment == { GPUFN_GATEWAY = "gpufn.internal:4433", GPUFN_LOG = "info", HF_HOME = "/opt/hf" }
    error_message = "extra_env should be added to the environment."
  }
}
