variable "region" {
  description = "AWS region to deploy into."
  type        = string
}

variable "name" {
  description = "Name prefix of every resource."
  type        = string
  default     = "comfyui-lab"
}

variable "vpc_id" {
  description = "Existing VPC to deploy into."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets (with a NAT gateway or VPC endpoints for HTTPS) for the gateway, the GPU workers and the lab VMs. The gateway goes into the first one."
  type        = list(string)
}

variable "public_subnet_ids" {
  description = "Public subnets for the internet-facing load balancer of the gateway's HTTP API."
  type        = list(string)
}

variable "gateway_ami_id" {
  description = "AMI of the gateway (Ubuntu 24.04 or Amazon Linux 2023, with the aws CLI)."
  type        = string
}

variable "worker_ami_id" {
  description = "AMI of the GPU workers, with the NVIDIA driver and the aws CLI (for example the AWS Deep Learning Base GPU AMI for Ubuntu)."
  type        = string
}

variable "lab_ami_id" {
  description = "AMI of the CPU-only lab VMs: Ubuntu 24.04 with the aws CLI (the first-boot commands use apt-get)."
  type        = string
}

variable "binary_url" {
  description = "gpufn release binary for x86_64 Linux (https:// or s3://)."
  type        = string
}

variable "binary_sha256" {
  description = "SHA-256 of the file at binary_url."
  type        = string
}

variable "tls_cert_secret_arn" {
  description = "Secret holding the gateway's TLS certificate chain (PEM); it must name the gateway's private address."
  type        = string
}

variable "tls_key_secret_arn" {
  description = "Secret holding the gateway's TLS private key (PEM)."
  type        = string
}

variable "signing_key_secret_arn" {
  description = "Secret holding the gateway's token signing key."
  type        = string
}

variable "worker_token_secret_arn" {
  description = "Secret holding a gpufn token with the worker scope (read by the GPU workers)."
  type        = string
}

variable "session_token_secret_arn" {
  description = "Secret holding a gpufn token with the session scope (read by the lab VMs' stubs)."
  type        = string
}

variable "private_zone_id" {
  description = "Route 53 private hosted zone of the VPC in which to create gateway_dns_name; null to skip (workers and lab VMs then use the gateway's private IP, which the TLS certificate must name)."
  type        = string
  default     = null
}

variable "gateway_dns_name" {
  description = "Name of the gateway inside the VPC (for example \"gpufn.lab.internal\"), created in private_zone_id. Issue the gateway's TLS certificate for this name."
  type        = string
  default     = null

  validation {
    condition     = (var.gateway_dns_name == null) == (var.private_zone_id == null)
    error_message = "Set gateway_dns_name and private_zone_id together (or neither)."
  }
}

variable "api_cidr_blocks" {
  description = "Address ranges allowed to call the gateway's HTTP API and QUIC endpoint through the load balancer."
  type        = list(string)
}

variable "http_certificate_arn" {
  description = "ACM certificate for HTTPS on the load balancer; null serves plain HTTP on port 80 (only for a closed test network)."
  type        = string
  default     = null
}

variable "lab_user_cidr_blocks" {
  description = "Address ranges (your VPN or office) allowed to open ComfyUI on the lab VMs, port 8188."
  type        = list(string)
}

variable "lab_vm_count" {
  description = "Number of CPU-only lab VMs, each running ComfyUI through the stub."
  type        = number
  default     = 2

  validation {
    condition     = var.lab_vm_count >= 1 && var.lab_vm_count <= 50
    error_message = "lab_vm_count must be between 1 and 50."
  }
}

variable "lab_instance_type" {
  description = "Instance type of the lab VMs (no GPU)."
  type        = string
  default     = "c7i.xlarge"
}

variable "comfyui_ref" {
  description = "Git tag or branch of ComfyUI installed on the lab VMs."
  type        = string
  default     = "master"

  validation {
    condition     = can(regex("^[A-Za-z0-9._/-]+$", var.comfyui_ref))
    error_message = "comfyui_ref must be a git tag or branch name."
  }
}

variable "gpu_instance_types" {
  description = "GPU instance types of the pool."
  type        = list(string)
  default     = ["g6.xlarge", "g5.xlarge"]
}

variable "gpu_capacity_type" {
  description = "\"on-demand\" or \"spot\" for the GPU pool."
  type        = string
  default     = "spot"
}

variable "gpu_max_workers" {
  description = "Most GPU workers the pool may run."
  type        = number
  default     = 1
}
