# A pool of GPU workers: launch template + autoscaling group. Each worker boots with the
# configuration rendered by worker-config, reads its token from one secret and registers
# with the gateway by itself.

data "aws_partition" "current" {}

data "aws_ami" "worker" {
  filter {
    name   = "image-id"
    values = [var.ami_id]
  }
}

locals {
  token_source = strcontains(var.worker_token_secret_arn, ":secretsmanager:") ? "aws-secretsmanager" : "aws-ssm"

  # s3://bucket/key -> arn:aws:s3:::bucket/key, so the role can read exactly that object.
  binary_object_arn = startswith(var.binary_url, "s3://") ? "arn:${data.aws_partition.current.partition}:s3:::${trimprefix(var.binary_url, "s3://")}" : null

  tags = merge(var.tags, { "gpufn:pool" = var.name, "gpufn:role" = "worker" })
}

module "config" {
  source = "../worker-config"

  role             = "worker"
  binary_url       = var.binary_url
  binary_sha256    = var.binary_sha256
  gateway_address  = var.gateway_address
  token_secret     = { source = local.token_source, id = var.worker_token_secret_arn }
  swap_device_glob = var.use_instance_store_for_swap ? "/dev/disk/by-id/nvme-Amazon_EC2_NVMe_Instance_Storage_*" : null
  idle_timeout     = var.idle_timeout
  default_qos      = var.default_qos
  worker_listen    = "0.0.0.0:${var.worker_port}"
  log_level        = var.log_level
  extra_env        = var.extra_env
}

# --- Network: the data port is open to the gateway and the clients only. ---------------

resource "aws_security_group" "workers" {
  name_prefix = "${var.name}-workers-"
  description = "gpufn workers of pool ${var.name}: data port from the gateway and clients only"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-workers" })

  lifecycle {
    create_before_destroy = true
  }
}

locals {
  data_plane_protocols = ["udp", "tcp"]

  # Keys are positions, not IDs: IDs of security groups created in the same apply are
  # unknown at plan time and cannot key a for_each.
  data_plane_sources = concat(
    [{ key = "gateway", security_group = var.gateway_security_group_id, cidr = null }],
    [for i, sg in var.client_security_group_ids : { key = "client-sg-${i}", security_group = sg, cidr = null }],
    [for i, cidr in var.client_cidr_blocks : { key = "client-cidr-${i}", security_group = null, cidr = cidr }],
  )

  data_plane_rules = {
    for pair in setproduct(local.data_plane_sources, local.data_plane_protocols) :
    "${pair[0].key}/${pair[1]}" => { source = pair[0], protocol = pair[1] }
  }
}

resource "aws_vpc_security_group_ingress_rule" "data_plane" {
  for_each = local.data_plane_rules

  security_group_id            = aws_security_group.workers.id
  description                  = "gpufn data plane (${each.value.protocol}) from ${each.value.source.key}"
  ip_protocol                  = each.value.protocol
  from_port                    = var.worker_port
  to_port                      = var.worker_port
  referenced_security_group_id = each.value.source.security_group
  cidr_ipv4                    = each.value.source.cidr
}

resource "aws_vpc_security_group_egress_rule" "gateway_quic" {
  security_group_id            = aws_security_group.workers.id
  description                  = "Register with the gateway over QUIC"
  ip_protocol                  = "udp"
  from_port                    = var.gateway_quic_port
  to_port                      = var.gateway_quic_port
  referenced_security_group_id = var.gateway_security_group_id
}

resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.workers.id
  description       = "HTTPS to AWS APIs (Secrets Manager, SSM, S3) and the release download"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

# --- IAM: read the token (and the binary), nothing else. ---------------------------------

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "worker" {
  statement {
    sid       = "ReadWorkerToken"
    actions   = local.token_source == "aws-secretsmanager" ? ["secretsmanager:GetSecretValue"] : ["ssm:GetParameter"]
    resources = [var.worker_token_secret_arn]
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "DecryptWorkerToken"
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

resource "aws_iam_role" "worker" {
  name_prefix        = "${var.name}-worker-"
  description        = "gpufn workers of pool ${var.name}"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
  tags               = local.tags
}

resource "aws_iam_role_policy" "worker" {
  name_prefix = "gpufn-worker-"
  role        = aws_iam_role.worker.id
  policy      = data.aws_iam_policy_document.worker.json
}

resource "aws_iam_role_policy_attachment" "additional" {
  for_each = toset(var.additional_iam_policy_arns)

  role       = aws_iam_role.worker.name
  policy_arn = each.value
}

resource "aws_iam_instance_profile" "worker" {
  name_prefix = "${var.name}-worker-"
  role        = aws_iam_role.worker.name
  tags        = local.tags
}

# --- Instances ----------------------------------------------------------------------------

resource "aws_launch_template" "worker" {
  name_prefix            = "${var.name}-"
  description            = "gpufn worker of pool ${var.name}"
  image_id               = var.ami_id
  instance_type          = var.instance_types[0]
  user_data              = base64encode(module.config.cloud_init)
  update_default_version = true
  ebs_optimized          = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.worker.arn
  }

  # IMDSv2 only, and not reachable from containers on the host.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  network_interfaces {
    associate_public_ip_address = false
    delete_on_termination       = true
    security_groups             = [aws_security_group.workers.id]
  }

  block_device_mappings {
    device_name = data.aws_ami.worker.root_device_name
    ebs {
      volume_size           = var.root_volume_size_gb
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  monitoring {
    enabled = true
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "${var.name}-worker" })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = local.tags
  }

  tags = local.tags
}

resource "aws_autoscaling_group" "workers" {
  name_prefix         = "${var.name}-"
  vpc_zone_identifier = var.subnet_ids
  min_size            = var.min_size
  max_size            = var.max_size
  desired_capacity    = var.desired_capacity
  health_check_type   = "EC2"
  capacity_rebalance  = var.capacity_type == "spot"

  mixed_instances_policy {
    instances_distribution {
      on_demand_base_capacity                  = 0
      on_demand_percentage_above_base_capacity = var.capacity_type == "spot" ? 0 : 100
      on_demand_allocation_strategy            = "prioritized"
      spot_allocation_strategy                 = "price-capacity-optimized"
    }

    launch_template {
      launch_template_specification {
        launch_template_id = aws_launch_template.worker.id
        version            = aws_launch_template.worker.latest_version
      }

      dynamic "override" {
        for_each = var.instance_types
        content {
          instance_type = override.value
        }
      }
    }
  }

  # A new launch template version (new binary, new settings) replaces workers gradually.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 50
    }
  }

  dynamic "tag" {
    for_each = merge(local.tags, { Name = "${var.name}-worker" })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}
