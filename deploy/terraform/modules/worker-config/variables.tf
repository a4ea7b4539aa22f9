# Inputs of the rendered machine configuration. Every value ends up in a file on the
# machine, so each one is validated here: a bad value fails `terraform plan` with a
# message instead of a machine that boots and silently does nothing.

variable "role" {
  description = "What the machine runs: \"gateway\" (control plane), \"worker\" (GPU worker that registers with the gateway) or \"client\" (CPU-only machine running a program through the stub)."
  type        = string

  validation {
    condition     = contains(["gateway", "worker", "client"], var.role)
    error_message = "role must be one of \"gateway\", \"worker\" or \"client\"."
  }
}

variable "binary_url" {
  description = "Where the gpufn release binary is fetched from at first boot: an https:// URL, an s3:// object (needs the aws CLI on the image) or a gs:// object (needs gcloud). A URL ending in .tar.gz is unpacked and must contain a file named gpufn."
  type        = string

  validation {
    condition     = can(regex("^(https|s3|gs)://[A-Za-z0-9._~:/?=&%+@-]+$", var.binary_url))
    error_message = "binary_url must start with https://, s3:// or gs:// and contain only URL characters (letters, digits and ._~:/?=&%+@-). Plain http:// is refused because the binary runs as a service."
  }
}

variable "binary_sha256" {
  description = "SHA-256 of the file at binary_url (64 lowercase hex digits). The machine refuses to install a binary whose digest differs."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.binary_sha256))
    error_message = "binary_sha256 must be 64 lowercase hexadecimal digits, as printed by `sha256sum`."
  }
}

variable "gateway_address" {
  description = "host:port of the gateway's QUIC control endpoint, as workers and clients reach it (for example \"10.0.1.10:4433\" or \"gpufn.internal:4433\"). Required for workers and clients; ignored for the gateway."
  type        = string
  default     = null

  validation {
    condition     = var.gateway_address == null || can(regex("^([A-Za-z0-9.-]+|\\[[0-9A-Fa-f:]+\\]):[0-9]{1,5}$", var.gateway_address))
    error_message = "gateway_address must be host:port (for example \"10.0.1.10:4433\"; IPv6 as \"[fd00::1]:4433\")."
  }

  validation {
    condition     = var.role == "gateway" || var.gateway_address != null
    error_message = "gateway_address is required for workers and clients: set it to the gateway's host:port."
  }
}

variable "token_secret" {
  description = "Where the machine reads its gpufn token at every boot. source is \"aws-secretsmanager\" (id: secret name or ARN), \"aws-ssm\" (id: SecureString parameter name), \"gcp-secretmanager\" (id: projects/P/secrets/S/versions/V) or \"file\" (id: absolute path of a file the image already holds). Required for workers (a token with the worker scope) and clients (a token with the session scope). The token itself never appears in the rendered configuration."
  type = object({
    source = string
    id     = string
  })
  default = null

  validation {
    condition     = var.token_secret == null || contains(["aws-secretsmanager", "aws-ssm", "gcp-secretmanager", "file"], try(var.token_secret.source, ""))
    error_message = "token_secret.source must be one of \"aws-secretsmanager\", \"aws-ssm\", \"gcp-secretmanager\" or \"file\"."
  }

  validation {
    condition     = var.token_secret == null || can(regex("^[A-Za-z0-9_./:@+=,-]+$", try(var.token_secret.id, "")))
    error_message = "token_secret.id must be a secret name, ARN, parameter name or path made of letters, digits and _./:@+=,- (it is the reference to the secret, never the token itself)."
  }

  validation {
    condition     = var.role == "gateway" || var.token_secret != null
    error_message = "token_secret is required for workers and clients: point it at the secret that holds the gpufn token."
  }
}

variable "gateway_secrets" {
  description = "Gateway only: references to the TLS certificate chain (PEM), its private key (PEM) and the token signing key, each as { source, id } with the same sources as token_secret. Fetched at every boot into /run/gpufn (memory only)."
  type = object({
    tls_cert    = object({ source = string, id = string })
    tls_key     = object({ source = string, id = string })
    signing_key = object({ source = string, id = string })
  })
  default = null

  validation {
    condition = var.gateway_secrets == null || alltrue([
      for ref in try(values(var.gateway_secrets), []) :
      contains(["aws-secretsmanager", "aws-ssm", "gcp-secretmanager", "file"], ref.source) && can(regex("^[A-Za-z0-9_./:@+=,-]+$", ref.id))
    ])
    error_message = "Each gateway secret needs source \"aws-secretsmanager\", \"aws-ssm\", \"gcp-secretmanager\" or \"file\", and an id made of letters, digits and _./:@+=,-."
  }

  validation {
    condition     = var.role != "gateway" || var.gateway_secrets != null
    error_message = "gateway_secrets is required for the gateway: give the references of tls_cert, tls_key and signing_key."
  }
}

variable "swap_dir" {
  description = "Worker only: directory of the swap tier (device memory of idle sessions is written here). Put it on local NVMe with swap_device_glob."
  type        = string
  default     = "/mnt/gpufn-swap"

  validation {
    condition     = can(regex("^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$", var.swap_dir)) && !contains(["/", "/etc", "/usr", "/var", "/run", "/tmp"], var.swap_dir)
    error_message = "swap_dir must be an absolute path made of letters, digits and ._/- (not a system directory such as / or /var), for example \"/mnt/gpufn-swap\"."
  }
}

variable "swap_device_glob" {
  description = "Worker only: shell glob of the local NVMe devices that back swap_dir. They are formatted (ext4; RAID 0 with mdadm when there are several) and mounted at every boot, because instance storage comes back empty after a stop. AWS instance store: \"/dev/disk/by-id/nvme-Amazon_EC2_NVMe_Instance_Storage_*\"; GCP local SSD: \"/dev/disk/by-id/google-local-nvme-ssd-*\". null keeps swap_dir on the root disk."
  type        = string
  default     = null

  validation {
    condition     = var.swap_device_glob == null || can(regex("^/dev/[A-Za-z0-9._/*-]+$", var.swap_device_glob))
    error_message = "swap_device_glob must be a path under /dev/ that may contain * (for example \"/dev/disk/by-id/nvme-Amazon_EC2_NVMe_Instance_Storage_*\")."
  }
}

variable "idle_timeout" {
  description = "Worker only: how long a session may stay idle before its device memory is swapped out and the GPU is shared with others (a number and a unit: ms, s, m or h)."
  type        = string
  default     = "10s"

  validation {
    condition     = can(regex("^[1-9][0-9]*(ms|s|m|h)$", var.idle_timeout))
    error_message = "idle_timeout must be a positive whole number followed by ms, s, m or h, for example \"10s\"."
  }
}

variable "default_qos" {
  description = "QoS level given to sessions that ask for none: low, medium, high or critical. Under memory pressure lower levels are swapped out first."
  type        = string
  default     = "medium"

  validation {
    condition     = contains(["low", "medium", "high", "critical"], var.default_qos)
    error_message = "default_qos must be one of \"low\", \"medium\", \"high\" or \"critical\"."
  }
}

variable "worker_listen" {
  description = "Worker only: address the worker's data plane listens on; stubs on client machines connect here directly."
  type        = string
  default     = "0.0.0.0:4500"

  validation {
    condition     = can(regex("^([0-9.]+|\\[[0-9A-Fa-f:]+\\]):[0-9]{1,5}$", var.worker_listen))
    error_message = "worker_listen must be ip:port, for example \"0.0.0.0:4500\"."
  }
}

variable "gateway_listen_http" {
  description = "Gateway only: address of the HTTP API (invocations, deploys, /metrics)."
  type        = string
  default     = "0.0.0.0:8080"

  validation {
    condition     = can(regex("^([0-9.]+|\\[[0-9A-Fa-f:]+\\]):[0-9]{1,5}$", var.gateway_listen_http))
    error_message = "gateway_listen_http must be ip:port, for example \"0.0.0.0:8080\"."
  }
}

variable "gateway_listen_quic" {
  description = "Gateway only: address of the QUIC control endpoint that workers and stubs connect to."
  type        = string
  default     = "0.0.0.0:4433"

  validation {
    condition     = can(regex("^([0-9.]+|\\[[0-9A-Fa-f:]+\\]):[0-9]{1,5}$", var.gateway_listen_quic))
    error_message = "gateway_listen_quic must be ip:port, for example \"0.0.0.0:4433\"."
  }
}

variable "data_dir" {
  description = "Gateway only: state directory (tenants, functions, usage ledger). Mount persistent storage here with data_device."
  type        = string
  default     = "/var/lib/gpufn"

  validation {
    condition     = can(regex("^/[A-Za-z0-9._/-]*[A-Za-z0-9._-]$", var.data_dir)) && !contains(["/", "/etc", "/usr", "/var", "/run", "/tmp"], var.data_dir)
    error_message = "data_dir must be an absolute path made of letters, digits and ._/- and not a system directory, for example \"/var/lib/gpufn\"."
  }
}

variable "data_device" {
  description = "Gateway only: block device that holds data_dir (for example the by-id path of an EBS volume). It is formatted only if it has no file system yet, then mounted at every boot. null keeps data_dir on the root disk."
  type        = string
  default     = null

  validation {
    condition     = var.data_device == null || can(regex("^/dev/[A-Za-z0-9._/-]+$", var.data_device))
    error_message = "data_device must be a path under /dev/, for example \"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0\"."
  }
}

variable "function_idle_timeout" {
  description = "Gateway only: how long a function instance may receive no invocation before it is scaled to zero (a number and a unit: s, m or h)."
  type        = string
  default     = "5m"

  validation {
    condition     = can(regex("^[1-9][0-9]*(s|m|h)$", var.function_idle_timeout))
    error_message = "function_idle_timeout must be a positive whole number followed by s, m or h, for example \"5m\"."
  }
}

variable "client_command" {
  description = "Client only: the program, with its arguments, that runs through the stub as `gpufn run -- PROGRAM ARGS...` (for example [\"python3\", \"/opt/ComfyUI/main.py\", \"--listen\", \"0.0.0.0\"])."
  type        = list(string)
  default     = []

  validation {
    condition     = var.role != "client" || length(var.client_command) > 0
    error_message = "client_command is required for clients: give the program and its arguments, for example [\"python3\", \"/opt/app/main.py\"]."
  }

  validation {
    condition     = alltrue([for arg in var.client_command : !strcontains(arg, "\n")])
    error_message = "client_command arguments must not contain line breaks."
  }
}

variable "client_working_dir" {
  description = "Client only: working directory of the program."
  type        = string
  default     = "/opt/gpufn-app"

  validation {
    condition     = can(regex("^/[A-Za-z0-9._/-]*$", var.client_working_dir))
    error_message = "client_working_dir must be an absolute path made of letters, digits and ._/-."
  }
}

variable "log_level" {
  description = "Value of GPUFN_LOG: error, warn, info, debug or trace (debug on a client traces every CUDA call)."
  type        = string
  default     = "info"

  validation {
    condition     = contains(["error", "warn", "info", "debug", "trace"], var.log_level)
    error_message = "log_level must be one of \"error\", \"warn\", \"info\", \"debug\" or \"trace\"."
  }
}

variable "service_user" {
  description = "Unix user the service runs as; created at first boot if missing."
  type        = string
  default     = "gpufn"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.service_user)) && var.service_user != "root"
    error_message = "service_user must be a valid Unix user name (lowercase letters, digits, _ and -) other than root."
  }
}

variable "extra_env" {
  description = "Additional environment variables of the service (for example CUDA_VISIBLE_DEVICES). Secrets do not belong here: the rendered configuration is readable from instance metadata."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for name in keys(var.extra_env) : can(regex("^[A-Z_][A-Z0-9_]*$", name))])
    error_message = "extra_env names must be upper-case shell variable names (A-Z, 0-9, _)."
  }

  validation {
    condition     = !contains(keys(var.extra_env), "GPUFN_TOKEN")
    error_message = "GPUFN_TOKEN must not be set in extra_env (it would be stored in plain text in the user data); use token_secret instead."
  }

  validation {
    condition     = alltrue([for value in values(var.extra_env) : !strcontains(value, "\n")])
    error_message = "extra_env values must not contain line breaks."
  }
}

variable "first_boot_commands" {
  description = "Shell commands run once, as root, at first boot after gpufn is installed and before the service starts (for example installing the program a client runs). Each entry runs with `bash -c`."
  type        = list(string)
  default     = []
}

variable "extra_args" {
  description = "Additional command-line arguments appended to the gpufn command (for example flags newer than this module)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arg in var.extra_args : !strcontains(arg, "\n")])
    error_message = "extra_args must not contain line breaks."
  }
}
