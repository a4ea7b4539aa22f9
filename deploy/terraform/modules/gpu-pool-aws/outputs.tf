output "autoscaling_group_name" {
  description = "Name of the workers' autoscaling group (scale it with desired_capacity or an autoscaling policy)."
  value       = aws_autoscaling_group.workers.name
}

output "launch_template_id" {
  description = "ID of the workers' launch template."
  value       = aws_launch_template.worker.id
}

output "security_group_id" {
  description = "Security group of the workers."
  value       = aws_security_group.workers.id
}

output "iam_role_arn" {
  description = "IAM role of the workers (reads the worker token and, for an s3:// binary, that one object)."
  value       = aws_iam_role.worker.arn
}

output "worker_port" {
  description = "Data-plane port of the workers (UDP and TCP)."
  value       = var.worker_port
}

output "user_data" {
  description = "The cloud-init configuration every worker boots with (holds no secret)."
  value       = module.config.cloud_init
}
