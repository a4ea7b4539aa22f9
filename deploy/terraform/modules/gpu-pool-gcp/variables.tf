variable "name" {
  description = "Name of the pool; prefixes every resource (instance template, instance group, service account, firewall rule)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,18}[a-z0-9]$", var.name))
    error_message = "name must be 3 to 20 lowercase letters, digits or dashes, starting with a letter (service account IDs are short)."
  }
}

variable "project" {
  description = "GCP project of the pool."
  type        = string
}

variable "region" {
  description = "Region of the regional managed instance group."
  type        = string
}

variable "zones" {
  description = "Zones of region the workers may run in; each must offer the machine type and its GPU."
  type        = list(string)

  validation {
    condition     = length(var.zones) > 0
    error_message = "zones needs at least one zone."
  }
}

variable "network" {
  description = "Self link or name of the VPC network (the firewall rule is created in it)."
  type        = string
}

variable "subnetwork" {
  description = "Self link or name of the subnetwork of the workers. Workers get no external IP: give the subnetwork Cloud NAT or Private Google Access."
  type        = string
}

variable "source_image" {
  description = "Boot image with the NVIDIA driver, cloud-init and gcloud (for example a Deep Learning VM image family with a CUDA driver). Images change often, so it has no default."
  type        = string
}

variable "machine_type" {
  description = "Machine type of the workers. Accelerator-optimized types (g2, a2, a3) come with their GPUs; N1 types need accelerator_type."
  type        = string
  default     = "g2-standard-8"
}

variable "accelerator_type" {
  description = "GPU to attach to N1 machine types (for example \"nvidia-tesla-t4\"); null for accelerator-optimized types, whose GPUs are implied."
  type        = string
  default     = null
}

variable "accelerator_count" {
  description = "Number of GPUs of accelerator_type per worker."
  type        = number
  default     = 1
}

variable "target_size" {
  description = "Number of workers the instance group keeps running (0 scales the pool to zero)."
  type        = number
  default     = 1

  validation {
    condition     = var.target_size >= 0 && floor(var.target_size) == var.target_size
    error_message = "target_size must be a whole number, 0 or more."
  }
}

variable "spot" {
  description = "Run the workers as Spot VMs (cheaper, can be reclaimed at any time; sessions on them are lost)."
  type        = bool
  default     = false
}

variable "boot_disk_size_gb" {
  description = "Size of the boot disk in GB."
  type        = number
  default     = 100
}

variable "local_ssd_count" {
  description = "Local NVMe SSDs (375 GB each) for the swap tier, striped when several; 0 keeps the swap tier on the boot disk. The machine type must allow the count."
  type        = number
  default     = 1

  validation {
    condition     = var.local_ssd_count >= 0 && var.local_ssd_count <= 24
    error_message = "local_ssd_count must be between 0 and 24."
  }
}

variable "binary_url" {
  description = "Where workers download the gpufn binary at first boot (https:// or gs://). The bucket of a gs:// object is made readable to the workers' service account."
  type        = string

  validation {
    condition     = can(regex("^(https|gs)://", var.binary_url))
    error_message = "binary_url must start with https:// or gs://."
  }
}

variable "binary_sha256" {
  description = "SHA-256 of the file at binary_url."
  type        = string
}

variable "gateway_address" {
  description = "host:port of the gateway's QUIC endpoint as workers reach it."
  type        = string
}

variable "worker_token_secret" {
  description = "Secret Manager secret holding the workers' gpufn token (worker scope), as projects/PROJECT/secrets/NAME. Workers may read this one secret (its latest version) and nothing else."
  type        = string

  validation {
    condition     = can(regex("^projects/[a-z0-9-]+/secrets/[A-Za-z0-9_-]+$", var.worker_token_secret))
    error_message = "worker_token_secret must be projects/PROJECT/secrets/NAME."
  }
}

variable "worker_port" {
  description = "Port of the workers' data plane (UDP for QUIC, TCP for the fallback transport)."
  type        = number
  default     = 4500
}

variable "gateway_network_tags" {
  description = "Network tags of the gateway's instances: they may reach the workers' data port."
  type        = list(string)
  default     = []
}

variable "client_network_tags" {
  description = "Network tags of the CPU-only machines whose stubs connect to the workers."
  type        = list(string)
  default     = []
}

variable "client_source_ranges" {
  description = "Address ranges of other clients (for example the gateway outside GCP through a VPN) that may reach the workers' data port."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.gateway_network_tags) + length(var.client_network_tags) + length(var.client_source_ranges) > 0
    error_message = "Nothing could reach the workers: set gateway_network_tags, client_network_tags or client_source_ranges."
  }

  validation {
    condition     = !contains(var.client_source_ranges, "0.0.0.0/0")
    error_message = "client_source_ranges must not contain 0.0.0.0/0: workers must not be open to the internet."
  }
}

variable "idle_timeout" {
  description = "Idle time after which a session's GPU memory is swapped out (for example \"10s\")."
  type        = string
  default     = "10s"
}

variable "default_qos" {
  description = "QoS level for sessions that ask for none: low, medium, high or critical."
  type        = string
  default     = "medium"
}

variable "log_level" {
  description = "GPUFN_LOG of the workers: error, warn, info, debug or trace."
  type        = string
  default     = "info"
}

variable "extra_env" {
  description = "Additional environment variables of the worker service (no secrets)."
  type        = map(string)
  default     = {}
}

variable "labels" {
  description = "Labels added to the workers and their disks."
  type        = map(string)
  default     = {}
}
