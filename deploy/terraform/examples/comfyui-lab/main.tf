# A ComfyUI lab: one gateway, one small GPU pool and N CPU-only VMs that run ComfyUI
# through the gpufn stub. The GPU is attached to a VM only while its user generates.

locals {
  worker_port = 4500
  quic_port   = 4433
  comfyui_dir = "/opt/ComfyUI"

  # Workers and lab VMs reach the gateway by name when there is one (the TLS certificate
  # names it), else at its stable private IP.
  gateway_address = var.gateway_dns_name == null ? module.gateway.private_quic_address : "${var.gateway_dns_name}:${local.quic_port}"
}

module "gateway" {
  source = "../../modules/gateway-aws"

  name                      = var.name
  vpc_id                    = var.vpc_id
  subnet_id                 = var.private_subnet_ids[0]
  lb_subnet_ids             = var.public_subnet_ids
  ami_id                    = var.gateway_ami_id
  binary_url                = var.binary_url
  binary_sha256             = var.binary_sha256
  tls_cert_secret_arn       = var.tls_cert_secret_arn
  tls_key_secret_arn        = var.tls_key_secret_arn
  signing_key_secret_arn    = var.signing_key_secret_arn
  http_certificate_arn      = var.http_certificate_arn
  client_cidr_blocks        = var.api_cidr_blocks
  member_security_group_ids = [module.gpu_pool.security_group_id, aws_security_group.lab.id]
  quic_port                 = local.quic_port
  worker_port               = local.worker_port
  # A lab is torn down often; production keeps the default (true).
  deletion_protection = false
}

module "gpu_pool" {
  source = "../../modules/gpu-pool-aws"

  name                      = "${var.name}-gpu"
  vpc_id                    = var.vpc_id
  subnet_ids                = var.private_subnet_ids
  ami_id                    = var.worker_ami_id
  instance_types            = var.gpu_instance_types
  capacity_type             = var.gpu_capacity_type
  min_size                  = 0
  desired_capacity          = 1
  max_size                  = var.gpu_max_workers
  binary_url                = var.binary_url
  binary_sha256             = var.binary_sha256
  gateway_address           = local.gateway_address
  gateway_quic_port         = local.quic_port
  worker_token_secret_arn   = var.worker_token_secret_arn
  gateway_security_group_id = module.gateway.security_group_id
  client_security_group_ids = [aws_security_group.lab.id]
  worker_port               = local.worker_port
  # Lab users step away often: give the GPU back after 10 s idle.
  idle_timeout = "10s"
}

resource "aws_route53_record" "gateway" {
  count = var.private_zone_id == null ? 0 : 1

  zone_id = var.private_zone_id
  name    = var.gateway_dns_name
  type    = "A"
  ttl     = 60
  records = [module.gateway.private_ip]
}

# --- Lab VMs: CPU only, ComfyUI through the stub ------------------------------------------

module "lab_config" {
  source = "../../modules/worker-config"

  role            = "client"
  binary_url      = var.binary_url
  binary_sha256   = var.binary_sha256
  gateway_address = local.gateway_address
  token_secret = {
    source = strcontains(var.session_token_secret_arn, ":secretsmanager:") ? "aws-secretsmanager" : "aws-ssm"
    id     = var.session_token_secret_arn
  }
  first_boot_commands = [
    "apt-get update && apt-get install -y git python3-venv",
    "git clone --depth 1 --branch ${var.comfyui_ref} https://github.com/comfyanonymous/ComfyUI.git ${local.comfyui_dir}",
    "python3 -m venv ${local.comfyui_dir}/.venv && ${local.comfyui_dir}/.venv/bin/pip install -r ${local.comfyui_dir}/requirements.txt",
    "chown -R gpufn:gpufn ${local.comfyui_dir}",
  ]
  client_working_dir = local.comfyui_dir
  client_command     = ["${local.comfyui_dir}/.venv/bin/python", "main.py", "--listen", "0.0.0.0", "--port", "8188"]
}

resource "aws_security_group" "lab" {
  name_prefix = "${var.name}-lab-"
  description = "ComfyUI lab VMs: ComfyUI from lab users, stub traffic to the gateway and workers"
  vpc_id      = var.vpc_id
  tags        = { Name = "${var.name}-lab" }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "comfyui" {
  for_each = { for i, cidr in var.lab_user_cidr_blocks : "lab-user-${i}" => cidr }

  security_group_id = aws_security_group.lab.id
  description       = "ComfyUI web UI from ${each.key}"
  ip_protocol       = "tcp"
  from_port         = 8188
  to_port           = 8188
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "lab_to_gateway" {
  security_group_id            = aws_security_group.lab.id
  description                  = "Stub to the gateway (QUIC)"
  ip_protocol                  = "udp"
  from_port                    = local.quic_port
  to_port                      = local.quic_port
  referenced_security_group_id = module.gateway.security_group_id
}

resource "aws_vpc_security_group_egress_rule" "lab_to_workers" {
  for_each = toset(["udp", "tcp"])

  security_group_id            = aws_security_group.lab.id
  description                  = "Stub to the GPU workers' data plane (${each.value})"
  ip_protocol                  = each.value
  from_port                    = local.worker_port
  to_port                      = local.worker_port
  referenced_security_group_id = module.gpu_pool.security_group_id
}

resource "aws_vpc_security_group_egress_rule" "lab_https" {
  security_group_id = aws_security_group.lab.id
  description       = "HTTPS: Secrets Manager, package mirrors, ComfyUI and its Python packages"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "lab_http" {
  security_group_id = aws_security_group.lab.id
  description       = "HTTP: Ubuntu package mirrors"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = "0.0.0.0/0"
}

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "lab" {
  statement {
    sid       = "ReadSessionToken"
    actions   = strcontains(var.session_token_secret_arn, ":secretsmanager:") ? ["secretsmanager:GetSecretValue"] : ["ssm:GetParameter"]
    resources = [var.session_token_secret_arn]
  }
}

resource "aws_iam_role" "lab" {
  name_prefix        = "${var.name}-lab-"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
}

resource "aws_iam_role_policy" "lab" {
  name_prefix = "gpufn-lab-"
  role        = aws_iam_role.lab.id
  policy      = data.aws_iam_policy_document.lab.json
}

resource "aws_iam_instance_profile" "lab" {
  name_prefix = "${var.name}-lab-"
  role        = aws_iam_role.lab.name
}

resource "aws_instance" "lab" {
  count = var.lab_vm_count

  ami                         = var.lab_ami_id
  instance_type               = var.lab_instance_type
  subnet_id                   = var.private_subnet_ids[count.index % length(var.private_subnet_ids)]
  vpc_security_group_ids      = [aws_security_group.lab.id]
  iam_instance_profile        = aws_iam_instance_profile.lab.name
  associate_public_ip_address = false
  user_data_base64            = base64encode(module.lab_config.cloud_init)
  user_data_replace_on_change = true
  ebs_optimized               = true
  monitoring                  = true

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = 60
    encrypted   = true
  }

  tags = { Name = "${var.name}-lab-${count.index}" }
}
