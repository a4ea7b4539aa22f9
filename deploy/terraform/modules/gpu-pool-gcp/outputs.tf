output "instance_group_manager" {
  description = "Self link of the workers' regional managed instance group (resize it to scale the pool)."
  value       = google_compute_region_instance_group_manager.workers.self_link
}

output "instance_template" {
  description = "Self link of the workers' instance template."
  value       = google_compute_instance_template.worker.self_link
}

output "service_account_email" {
  description = "Service account of the workers (reads the worker token and, for a gs:// binary, its bucket)."
  value       = google_service_account.worker.email
}

output "network_tag" {
  description = "Network tag of the workers, for firewall rules of the gateway and clients."
  value       = local.network_tag
}

output "user_data" {
  description = "The cloud-init configuration every worker boots with (holds no secret)."
  value       = module.config.cloud_init
}
