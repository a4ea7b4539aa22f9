variable "name" {
  description = "Name of the pool; prefixes every resource (launch template, autoscaling group, IAM role, security group)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,22}[a-z0-9]$", var.name))
    error_message = "name must be 3 to 24 lowercase letters, digits or dashes, starting with a letter (IAM name prefixes are short), for example \"gpufn-l4\"."
  }
}

variable "vpc_id" {
  description = "VPC the workers run in."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the workers (the autoscaling group spreads over them). Workers get no public IP."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids needs at least one subnet."
  }
}

variable "ami_id" {
  description = "AMI with the NVIDIA driver, cloud-init, curl and the aws CLI (for example an AWS Deep Learning Base GPU AMI). It differs per region, so it has no default."
  type        = string

  validation {
    condition     = can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must look like \"ami-0123456789abcdef0\"."
  }
}

variable "instance_types" {
  description = "GPU instance types the pool may launch, in order of preference. With spot, more types mean fewer interruptions. Types with instance-store NVMe (g5, g6, g6e, p4d, p5) give the swap tier local disks."
  type        = list(string)
  default     = ["g6.xlarge", "g5.xlarge"]

  validation {
    condition     = length(var.instance_types) > 0 && alltrue([for t in var.instance_types : can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", t))])
    error_message = "instance_types needs at least one EC2 instance type such as \"g6.xlarge\"."
  }
}

variable "min_size" {
  description = "Fewest workers the pool keeps running (0 lets the pool scale to zero)."
  type        = number
  default     = 0

  validation {
    condition     = var.min_size >= 0 && floor(var.min_size) == var.min_size
    error_message = "min_size must be a whole number, 0 or more."
  }
}

variable "max_size" {
  description = "Most workers the pool may run."
  type        = number
  default     = 2

  validation {
    condition     = var.max_size >= 1 && floor(var.max_size) == var.max_size && var.max_size >= var.min_size
    error_message = "max_size must be a whole number, at least 1 and at least min_size."
  }
}

variable "desired_capacity" {
  description = "Workers to run now; between min_size and max_size."
  type        = number
  default     = 1

  validation {
    condition     = floor(var.desired_capacity) == var.desired_capacity && var.desired_capacity >= var.min_size && var.desired_capacity <= var.max_size
    error_message = "desired_capacity must be a whole number between min_size and max_size."
  }
}

variable "capacity_type" {
  description = "\"on-demand\" or \"spot\". Spot workers can be reclaimed with two minutes' notice; sessions on them are lost."
  type        = string
  default     = "on-demand"

  validation {
    condition     = contains(["on-demand", "spot"], var.capacity_type)
    error_message = "capacity_type must be \"on-demand\" or \"spot\"."
  }
}

variable "root_volume_size_gb" {
  description = "Size of the encrypted gp3 root volume in GiB (the swap tier falls back to it when an instance type has no instance store)."
  type        = number
  default     = 100

  validation {
    condition     = var.root_volume_size_gb >= 20
    error_message = "root_volume_size_gb must be at least 20."
  }
}

variable "use_instance_store_for_swap" {
  description = "Format the instance-store NVMe disks (RAID 0 when several) at every boot and put the swap tier on them."
  type        = bool
  default     = true
}

variable "binary_url" {
  description = "Where workers download the gpufn binary at first boot (https:// or s3://). An s3:// object is granted to the workers' IAM role."
  type        = string

  validation {
    condition     = can(regex("^(https|s3)://", var.binary_url))
    error_message = "binary_url must start with https:// or s3://."
  }
}

variable "binary_sha256" {
  description = "SHA-256 of the file at binary_url."
  type        = string
}

variable "gateway_address" {
  description = "host:port of the gateway's QUIC endpoint as workers reach it (gateway-aws output private_quic_address)."
  type        = string
}

variable "gateway_quic_port" {
  description = "UDP port of the gateway's QUIC endpoint; the only place workers may connect to besides HTTPS."
  type        = number
  default     = 4433
}

variable "worker_token_secret_arn" {
  description = "ARN of the Secrets Manager secret or SSM SecureString parameter holding the workers' gpufn token (worker scope). Workers may read this one secret and nothing else."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:(secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:|ssm:[a-z0-9-]+:[0-9]{12}:parameter/)[A-Za-z0-9_./+=@-]+$", var.worker_token_secret_arn))
    error_message = "worker_token_secret_arn must be the ARN of a Secrets Manager secret (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME) or an SSM parameter (arn:aws:ssm:REGION:ACCOUNT:parameter/NAME)."
  }
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key that encrypts the token secret, if any (the workers may decrypt with it). null when the secret uses the AWS-managed key."
  type        = string
  default     = null
}

variable "gateway_security_group_id" {
  description = "Security group of the gateway (gateway-aws output security_group_id): it may reach the workers' data port, for the functions it runs."
  type        = string
}

variable "client_security_group_ids" {
  description = "Security groups of the CPU-only machines whose programs use this pool; their stubs connect to the workers' data port directly."
  type        = list(string)
  default     = []
}

variable "client_cidr_blocks" {
  description = "Address ranges of clients outside those security groups (for example a peered VPC) that may reach the workers' data port."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.client_cidr_blocks : can(cidrnetmask(c)) && c != "0.0.0.0/0"])
    error_message = "client_cidr_blocks must be IPv4 CIDR blocks, and not 0.0.0.0/0: workers must not be open to the internet."
  }
}

variable "worker_port" {
  description = "Port of the workers' data plane (UDP for QUIC and TCP for the fallback transport)."
  type        = number
  default     = 4500

  validation {
    condition     = var.worker_port >= 1024 && var.worker_port <= 65535
    error_message = "worker_port must be between 1024 and 65535 (the worker does not run as root)."
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

variable "additional_iam_policy_arns" {
  description = "Managed policies to attach to the workers' role as well (for example AmazonSSMManagedInstanceCore for shell access through Session Manager)."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags added to every resource and propagated to the worker instances."
  type        = map(string)
  default     = {}
}
