variable "name" {
  description = "Name of the deployment; prefixes every resource (instance, load balancer, volume, IAM role, security group)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,22}[a-z0-9]$", var.name))
    error_message = "name must be 3 to 24 lowercase letters, digits or dashes, starting with a letter (load balancer and IAM names are short)."
  }
}

variable "vpc_id" {
  description = "VPC of the gateway."
  type        = string
}

variable "subnet_id" {
  description = "Private subnet of the gateway instance. Its data volume and network interface live in this subnet's availability zone."
  type        = string
}

variable "lb_subnet_ids" {
  description = "Subnets of the network load balancer: public subnets for an internet-facing one, private ones with internal_lb = true. One of them must be in the gateway subnet's availability zone."
  type        = list(string)

  validation {
    condition     = length(var.lb_subnet_ids) > 0
    error_message = "lb_subnet_ids needs at least one subnet."
  }
}

variable "internal_lb" {
  description = "Make the load balancer reachable only inside the VPC (and peered networks)."
  type        = bool
  default     = false
}

variable "ami_id" {
  description = "AMI of the gateway: any Linux image with cloud-init, systemd, curl and the aws CLI (for example Amazon Linux 2023 or Ubuntu 24.04). It differs per region, so it has no default."
  type        = string

  validation {
    condition     = can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must look like \"ami-0123456789abcdef0\"."
  }
}

variable "instance_type" {
  description = "Instance type of the gateway. It needs no GPU; functions run on it as CPU-side processes, so size it for them. Must be a Nitro type (the data volume is found by its NVMe serial)."
  type        = string
  default     = "c7i.large"
}

variable "binary_url" {
  description = "Where the gateway downloads the gpufn binary at first boot (https:// or s3://). An s3:// object is granted to the gateway's IAM role."
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

variable "tls_cert_secret_arn" {
  description = "ARN of the Secrets Manager secret or SSM SecureString parameter holding the gateway's TLS certificate chain (PEM). It must name the addresses workers and clients use: the load balancer's DNS name or your own, and the private address."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:(secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:|ssm:[a-z0-9-]+:[0-9]{12}:parameter/)[A-Za-z0-9_./+=@-]+$", var.tls_cert_secret_arn))
    error_message = "tls_cert_secret_arn must be the ARN of a Secrets Manager secret or an SSM parameter."
  }
}

variable "tls_key_secret_arn" {
  description = "ARN of the secret or SSM SecureString parameter holding the TLS private key (PEM)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:(secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:|ssm:[a-z0-9-]+:[0-9]{12}:parameter/)[A-Za-z0-9_./+=@-]+$", var.tls_key_secret_arn))
    error_message = "tls_key_secret_arn must be the ARN of a Secrets Manager secret or an SSM parameter."
  }
}

variable "signing_key_secret_arn" {
  description = "ARN of the secret or SSM SecureString parameter holding the key that signs and verifies gpufn tokens."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:(secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:|ssm:[a-z0-9-]+:[0-9]{12}:parameter/)[A-Za-z0-9_./+=@-]+$", var.signing_key_secret_arn))
    error_message = "signing_key_secret_arn must be the ARN of a Secrets Manager secret or an SSM parameter."
  }
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key that encrypts those secrets, if any (the gateway may decrypt with it). null when they use the AWS-managed key."
  type        = string
  default     = null
}

variable "data_volume_size_gb" {
  description = "Size of the encrypted gp3 volume that holds the state store (tenants, functions, usage ledger). It outlives the instance."
  type        = number
  default     = 50

  validation {
    condition     = var.data_volume_size_gb >= 1
    error_message = "data_volume_size_gb must be at least 1."
  }
}

variable "data_volume_kms_key_arn" {
  description = "KMS key that encrypts the data and root volumes; null uses the account's default EBS key."
  type        = string
  default     = null
}

variable "http_port" {
  description = "Port of the gateway's HTTP API on the instance."
  type        = number
  default     = 8080
}

variable "quic_port" {
  description = "UDP port of the gateway's QUIC endpoint, on the instance and on the load balancer."
  type        = number
  default     = 4433
}

variable "public_http_port" {
  description = "Port of the HTTP API on the load balancer; null means 443 with http_certificate_arn and 80 without."
  type        = number
  default     = null
}

variable "http_certificate_arn" {
  description = "ACM certificate for the load balancer's HTTP listener. When set, the load balancer terminates TLS and forwards plain HTTP to http_port. When null, the listener forwards TCP unchanged."
  type        = string
  default     = null
}

variable "client_cidr_blocks" {
  description = "Address ranges allowed to reach the gateway through the load balancer (HTTP API and QUIC). No default: choose who may call your functions."
  type        = list(string)

  validation {
    condition     = length(var.client_cidr_blocks) > 0 && alltrue([for c in var.client_cidr_blocks : can(cidrnetmask(c))])
    error_message = "client_cidr_blocks needs at least one IPv4 CIDR block, for example [\"203.0.113.0/24\"]."
  }
}

variable "member_security_group_ids" {
  description = "Security groups whose instances reach the gateway directly at its private address: GPU worker pools (they register over QUIC) and client machines in the VPC."
  type        = list(string)
  default     = []
}

variable "worker_port" {
  description = "Data-plane port of the workers; the gateway's own function instances connect to it inside the VPC."
  type        = number
  default     = 4500
}

variable "default_qos" {
  description = "QoS level for sessions that ask for none: low, medium, high or critical."
  type        = string
  default     = "medium"
}

variable "function_idle_timeout" {
  description = "Idle time after which a function instance is scaled to zero (for example \"5m\")."
  type        = string
  default     = "5m"
}

variable "log_level" {
  description = "GPUFN_LOG of the gateway: error, warn, info, debug or trace."
  type        = string
  default     = "info"
}

variable "extra_env" {
  description = "Additional environment variables of the gateway service (no secrets)."
  type        = map(string)
  default     = {}
}

variable "access_logs_bucket" {
  description = "S3 bucket for the load balancer's access logs (it needs a bucket policy that lets the ELB service write). Network load balancers log TLS listeners only. null turns logging off."
  type        = string
  default     = null
}

variable "deletion_protection" {
  description = "Protect the load balancer from deletion (turn off before `terraform destroy`)."
  type        = bool
  default     = true
}

variable "additional_iam_policy_arns" {
  description = "Managed policies to attach to the gateway's role as well (for example AmazonSSMManagedInstanceCore)."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
