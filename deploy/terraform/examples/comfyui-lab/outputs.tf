output "http_endpoint" {
  description = "HTTP API of the gateway (deploy and invoke functions here)."
  value       = module.gateway.http_endpoint
}

output "gateway_private_address" {
  description = "QUIC address of the gateway inside the VPC (GPUFN_GATEWAY on the lab VMs and workers)."
  value       = local.gateway_address
}

output "comfyui_urls" {
  description = "ComfyUI on each lab VM (reachable from lab_user_cidr_blocks)."
  value       = [for vm in aws_instance.lab : "http://${vm.private_ip}:8188"]
}

output "gpu_pool_autoscaling_group" {
  description = "Autoscaling group of the GPU workers."
  value       = module.gpu_pool.autoscaling_group_name
}
