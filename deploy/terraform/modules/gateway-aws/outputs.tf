output "http_endpoint" {
  description = "Base URL of the HTTP API through the load balancer (POST {http_endpoint}/v1/functions/NAME/invoke)."
  value       = "${local.http_scheme}://${aws_lb.gateway.dns_name}:${local.public_http_port}"
}

output "quic_endpoint" {
  description = "host:port of the QUIC endpoint through the load balancer, for GPUFN_GATEWAY outside the VPC."
  value       = "${aws_lb.gateway.dns_name}:${var.quic_port}"
}

output "private_quic_address" {
  description = "host:port of the QUIC endpoint at the gateway's stable private address, for workers and clients inside the VPC (GPUFN_GATEWAY, gpu-pool-aws gateway_address)."
  value       = "${aws_network_interface.gateway.private_ip}:${var.quic_port}"
}

output "private_ip" {
  description = "Stable private IP of the gateway (its own network interface survives instance replacement)."
  value       = aws_network_interface.gateway.private_ip
}

output "private_http_endpoint" {
  description = "Base URL of the HTTP API at the gateway's private address."
  value       = "http://${aws_network_interface.gateway.private_ip}:${var.http_port}"
}

output "security_group_id" {
  description = "Security group of the gateway (give it to gpu-pool-aws as gateway_security_group_id)."
  value       = aws_security_group.gateway.id
}

output "load_balancer_dns_name" {
  description = "DNS name of the network load balancer (point your own DNS name at it)."
  value       = aws_lb.gateway.dns_name
}

output "instance_id" {
  description = "ID of the gateway instance."
  value       = aws_instance.gateway.id
}

output "data_volume_id" {
  description = "ID of the EBS volume that holds the state store."
  value       = aws_ebs_volume.data.id
}

output "iam_role_arn" {
  description = "IAM role of the gateway."
  value       = aws_iam_role.gateway.arn
}

output "user_data" {
  description = "The cloud-init configuration the gateway boots with (holds no secret)."
  value       = module.config.cloud_init
}
