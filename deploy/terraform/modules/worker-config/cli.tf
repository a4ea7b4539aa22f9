# The gpufn command line as this module uses it. These names follow the gpufn CLI
# (`gpufn gateway --help`, `gpufn worker --help`, `gpufn run --help`); when the CLI
# changes, this map is the only place to update.
locals {
  cli = {
    binary = "/usr/local/bin/gpufn"

    subcommands = {
      gateway = "gateway"
      worker  = "worker"
      client  = "run"
    }

    flags = {
      # gpufn gateway
      listen_http           = "--listen-http"
      listen_quic           = "--listen-quic"
      data_dir              = "--data-dir"
      tls_cert              = "--tls-cert"
      tls_key               = "--tls-key"
      signing_key_file      = "--signing-key-file"
      function_idle_timeout = "--function-idle-timeout"
      # gpufn worker
      gateway      = "--gateway"
      token_file   = "--token-file"
      swap_dir     = "--swap-dir"
      idle_timeout = "--idle-timeout"
      listen       = "--listen"
      # both
      default_qos = "--default-qos"
    }

    env = {
      gateway = "GPUFN_GATEWAY"
      token   = "GPUFN_TOKEN"
      log     = "GPUFN_LOG"
    }
  }
}
