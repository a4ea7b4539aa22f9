# The gpufn gateway: one instance with a stable private address (its own network
# interface) and a persistent state volume, both of which outlive instance replacement,
# behind a network load balancer (TCP for the HTTP API, UDP for QUIC).

data "aws_partition" "current" {}

data "aws_subnet" "gateway" {
  id = var.subnet_id
}

data "aws_subnet" "lb" {
  for_each = toset(var.lb_subnet_ids)
  id       = each.value
}

data "aws_vpc" "selected" {
  id = var.vpc_id
}

locals {
  secret_arns = {
    tls_cert    = var.tls_cert_secret_arn
    tls_key     = var.tls_key_secret_arn
    signing_key = var.signing_key_secret_arn
  }

  secret_sources = {
    for k, arn in local.secret_arns : k => strcontains(arn, ":secretsmanager:") ? "aws-secretsmanager" : "aws-ssm"
  }

  binary_object_arn = startswith(var.binary_url, "s3://") ? "arn:${data.aws_partition.current.partition}:s3:::${trimprefix(var.binary_url, "s3://")}" : null

  # On Nitro instances an EBS volume shows up as an NVMe disk whose serial is the volume
  # ID without its dash.
  data_device = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${replace(aws_ebs_volume.data.id, "-", "")}"

  public_http_port = coalesce(var.public_http_port, var.http_certificate_arn == null ? 80 : 443)
  http_scheme      = var.http_certificate_arn == null ? "http" : "https"

  tags = merge(var.tags, { "gpufn:deployment" = var.name, "gpufn:role" = "gateway" })
}

module "config" {
  source = "../worker-config"

  role          = "gateway"
  binary_url    = var.binary_url
  binary_sha256 = var.binary_sha256
  gateway_secrets = {
    for k, arn in local.secret_arns : k => { source = local.secret_sources[k], id = arn }
  }
  data_device           = local.data_device
  gateway_listen_http   = "0.0.0.0:${var.http_port}"
  gateway_listen_quic   = "0.0.0.0:${var.quic_port}"
  default_qos           = var.default_qos
  function_idle_timeout = var.function_idle_timeout
  log_level             = var.log_level
  extra_env             = var.extra_env
}

# --- Network ---------------------------------------------------------------------------

resource "aws_security_group" "gateway" {
  name_prefix = "${var.name}-gateway-"
  description = "gpufn gateway ${var.name}: HTTP and QUIC from clients, workers and the load balancer"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-gateway" })

  lifecycle {
    create_before_destroy = true
  }
}

locals {
  # The load balancer keeps the client's address, so the instance admits the clients'
  # ranges itself; health checks come from the load balancer's subnets.
  ingress_rules = merge(
    { for i, cidr in var.client_cidr_blocks : "client-http-${i}" => { protocol = "tcp", port = var.http_port, cidr = cidr, security_group = null } },
    { for i, cidr in var.client_cidr_blocks : "client-quic-${i}" => { protocol = "udp", port = var.quic_port, cidr = cidr, security_group = null } },
    { for id, subnet in data.aws_subnet.lb : "lb-health-${id}" => { protocol = "tcp", port = var.http_port, cidr = subnet.cidr_block, security_group = null } },
    { for i, sg in var.member_security_group_ids : "member-http-${i}" => { protocol = "tcp", port = var.http_port, cidr = null, security_group = sg } },
    { for i, sg in var.member_security_group_ids : "member-quic-${i}" => { protocol = "udp", port = var.quic_port, cidr = null, security_group = sg } },
  )
}

resource "aws_vpc_security_group_ingress_rule" "gateway" {
  for_each = local.ingress_rules

  security_group_id            = aws_security_group.gateway.id
  description                  = "gpufn ${each.key}"
  ip_protocol                  = each.value.protocol
  from_port                    = each.value.port
  to_port                      = each.value.port
  cidr_ipv4                    = each.value.cidr
  referenced_security_group_id = each.value.security_group
}

resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.gateway.id
  description       = "HTTPS to AWS APIs (Secrets Manager, SSM, S3) and the release download"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "workers" {
  for_each = toset(["udp", "tcp"])

  security_group_id = aws_security_group.gateway.id
  description       = "Function instances to the workers' data plane (${each.value})"
  ip_protocol       = each.value
  from_port         = var.worker_port
  to_port           = var.worker_port
  cidr_ipv4         = data.aws_vpc.selected.cidr_block
}

# A separate interface keeps the private address stable: workers and clients in the VPC
# keep reaching the gateway when the instance is replaced.
resource "aws_network_interface" "gateway" {
  subnet_id       = var.subnet_id
  security_groups = [aws_security_group.gateway.id]
  description     = "gpufn gateway ${var.name}"
  tags            = merge(local.tags, { Name = "${var.name}-gateway" })
}

# --- IAM: read the three secrets (and the binary), nothing else. --------------------------

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "gateway" {
  dynamic "statement" {
    for_each = { for k, arn in local.secret_arns : k => arn if local.secret_sources[k] == "aws-secretsmanager" }
    content {
      sid       = "Read${replace(title(replace(statement.key, "_", " ")), " ", "")}"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = { for k, arn in local.secret_arns : k => arn if local.secret_sources[k] == "aws-ssm" }
    content {
      sid       = "Read${replace(title(replace(statement.key, "_", " ")), " ", "")}Parameter"
      actions   = ["ssm:GetParameter"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "DecryptSecrets"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = local.binary_object_arn == null ? [] : [local.binary_object_arn]
    content {
      sid       = "DownloadGpufnBinary"
      actions   = ["s3:GetObject"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role" "gateway" {
  name_prefix        = "${var.name}-gateway-"
  description        = "gpufn gateway ${var.name}"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
  tags               = local.tags
}

resource "aws_iam_role_policy" "gateway" {
  name_prefix = "gpufn-gateway-"
  role        = aws_iam_role.gateway.id
  policy      = data.aws_iam_policy_document.gateway.json
}

resource "aws_iam_role_policy_attachment" "additional" {
  for_each = toset(var.additional_iam_policy_arns)

  role       = aws_iam_role.gateway.name
  policy_arn = each.value
}

resource "aws_iam_instance_profile" "gateway" {
  name_prefix = "${var.name}-gateway-"
  role        = aws_iam_role.gateway.name
  tags        = local.tags
}

# --- Instance and state volume ------------------------------------------------------------

resource "aws_ebs_volume" "data" {
  availability_zone = data.aws_subnet.gateway.availability_zone
  size              = var.data_volume_size_gb
  type              = "gp3"
  encrypted         = true
  kms_key_id        = var.data_volume_kms_key_arn
  final_snapshot    = true
  tags              = merge(local.tags, { Name = "${var.name}-gateway-data" })
}

resource "aws_instance" "gateway" {
  ami                         = var.ami_id
  instance_type               = var.instance_type
  iam_instance_profile        = aws_iam_instance_profile.gateway.name
  user_data_base64            = base64encode(module.config.cloud_init)
  user_data_replace_on_change = true
  ebs_optimized               = true
  monitoring                  = true

  network_interface {
    network_interface_id = aws_network_interface.gateway.id
    device_index         = 0
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = 30
    encrypted   = true
    kms_key_id  = var.data_volume_kms_key_arn
  }

  tags = merge(local.tags, { Name = "${var.name}-gateway" })
}

resource "aws_volume_attachment" "data" {
  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.data.id
  instance_id = aws_instance.gateway.id
  # Stop the gateway before the volume is detached, so the state store closes cleanly.
  stop_instance_before_detaching = true
}

# --- Load balancer ----------------------------------------------------------------------

resource "aws_lb" "gateway" {
  name                             = "${var.name}-gw"
  load_balancer_type               = "network"
  internal                         = var.internal_lb
  subnets                          = var.lb_subnet_ids
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.deletion_protection
  tags                             = local.tags

  dynamic "access_logs" {
    for_each = var.access_logs_bucket == null ? [] : [var.access_logs_bucket]
    content {
      bucket  = access_logs.value
      prefix  = var.name
      enabled = true
    }
  }
}

resource "aws_lb_target_group" "http" {
  name        = "${var.name}-http"
  port        = var.http_port
  protocol    = "TCP"
  vpc_id      = var.vpc_id
  target_type = "instance"
  tags        = local.tags

  health_check {
    protocol = "TCP"
    port     = "traffic-port"
  }
}

resource "aws_lb_target_group" "quic" {
  name        = "${var.name}-quic"
  port        = var.quic_port
  protocol    = "UDP"
  vpc_id      = var.vpc_id
  target_type = "instance"
  tags        = local.tags

  # UDP cannot be health-checked directly: the HTTP port stands for the process.
  health_check {
    protocol = "TCP"
    port     = tostring(var.http_port)
  }
}

resource "aws_lb_target_group_attachment" "http" {
  target_group_arn = aws_lb_target_group.http.arn
  target_id        = aws_instance.gateway.id
}

resource "aws_lb_target_group_attachment" "quic" {
  target_group_arn = aws_lb_target_group.quic.arn
  target_id        = aws_instance.gateway.id
}

resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.gateway.arn
  port              = local.public_http_port
  protocol          = var.http_certificate_arn == null ? "TCP" : "TLS"
  certificate_arn   = var.http_certificate_arn
  ssl_policy        = var.http_certificate_arn == null ? null : "ELBSecurityPolicy-TLS13-1-2-2021-06"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.http.arn
  }
}

resource "aws_lb_listener" "quic" {
  load_balancer_arn = aws_lb.gateway.arn
  port              = var.quic_port
  protocol          = "UDP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.quic.arn
  }
}
