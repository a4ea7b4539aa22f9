# A pool of GPU workers on GCP: instance template + regional managed instance group. Same
# machine configuration as gpu-pool-aws (worker-config), with Secret Manager for the token
# and local SSDs for the swap tier.

locals {
  network_tag   = "${var.name}-worker"
  binary_bucket = startswith(var.binary_url, "gs://") ? split("/", trimprefix(var.binary_url, "gs://"))[0] : null
  labels        = merge(var.labels, { "gpufn-pool" = var.name, "gpufn-role" = "worker" })
}

module "config" {
  source = "../worker-config"

  role             = "worker"
  binary_url       = var.binary_url
  binary_sha256    = var.binary_sha256
  gateway_address  = var.gateway_address
  token_secret     = { source = "gcp-secretmanager", id = "${var.worker_token_secret}/versions/latest" }
  swap_device_glob = var.local_ssd_count > 0 ? "/dev/disk/by-id/google-local-nvme-ssd-*" : null
  idle_timeout     = var.idle_timeout
  default_qos      = var.default_qos
  worker_listen    = "0.0.0.0:${var.worker_port}"
  log_level        = var.log_level
  extra_env        = var.extra_env
}

# --- Identity: read the token (and the binary's bucket), nothing else. --------------------

resource "google_service_account" "worker" {
  project      = var.project
  account_id   = "${var.name}-worker"
  display_name = "gpufn workers of pool ${var.name}"
}

resource "google_secret_manager_secret_iam_member" "worker_token" {
  project   = split("/", var.worker_token_secret)[1]
  secret_id = var.worker_token_secret
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.worker.email}"
}

resource "google_storage_bucket_iam_member" "binary" {
  count = local.binary_bucket == null ? 0 : 1

  bucket = local.binary_bucket
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.worker.email}"
}

# --- Network: the data port is open to the gateway and the clients only. -------------------

resource "google_compute_firewall" "data_plane" {
  project     = var.project
  name        = "${var.name}-data-plane"
  description = "gpufn data plane of pool ${var.name}: from the gateway and clients only"
  network     = var.network
  direction   = "INGRESS"
  target_tags = [local.network_tag]

  source_tags   = length(concat(var.gateway_network_tags, var.client_network_tags)) > 0 ? concat(var.gateway_network_tags, var.client_network_tags) : null
  source_ranges = length(var.client_source_ranges) > 0 ? var.client_source_ranges : null

  allow {
    protocol = "udp"
    ports    = [tostring(var.worker_port)]
  }

  allow {
    protocol = "tcp"
    ports    = [tostring(var.worker_port)]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# --- Instances ------------------------------------------------------------------------------

resource "google_compute_instance_template" "worker" {
  project      = var.project
  name_prefix  = "${var.name}-"
  description  = "gpufn worker of pool ${var.name}"
  machine_type = var.machine_type
  region       = var.region
  tags         = [local.network_tag]
  labels       = local.labels

  disk {
    boot         = true
    source_image = var.source_image
    disk_size_gb = var.boot_disk_size_gb
    disk_type    = "pd-balanced"
    auto_delete  = true
    labels       = local.labels
  }

  dynamic "disk" {
    for_each = range(var.local_ssd_count)
    content {
      type         = "SCRATCH"
      disk_type    = "local-ssd"
      interface    = "NVME"
      disk_size_gb = 375
    }
  }

  dynamic "guest_accelerator" {
    for_each = var.accelerator_type == null ? [] : [var.accelerator_type]
    content {
      type  = guest_accelerator.value
      count = var.accelerator_count
    }
  }

  # No access_config: workers get no external IP.
  network_interface {
    subnetwork = var.subnetwork
  }

  metadata = {
    user-data              = module.config.cloud_init
    block-project-ssh-keys = "true"
    enable-oslogin         = "TRUE"
  }

  service_account {
    email  = google_service_account.worker.email
    scopes = ["cloud-platform"]
  }

  # GPUs cannot live-migrate: the host's maintenance stops the worker.
  scheduling {
    on_host_maintenance         = "TERMINATE"
    automatic_restart           = !var.spot
    preemptible                 = var.spot
    provisioning_model          = var.spot ? "SPOT" : "STANDARD"
    instance_termination_action = var.spot ? "DELETE" : null
  }

  # Secure boot stays off: most GPU driver images load unsigned kernel modules.
  shielded_instance_config {
    enable_secure_boot          = false
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "google_compute_region_instance_group_manager" "workers" {
  project                   = var.project
  name                      = "${var.name}-workers"
  base_instance_name        = "${var.name}-worker"
  region                    = var.region
  distribution_policy_zones = var.zones
  target_size               = var.target_size

  version {
    instance_template = google_compute_instance_template.worker.self_link
  }

  # A new template (new binary, new settings) replaces workers zone by zone.
  update_policy {
    type                  = "PROACTIVE"
    minimal_action        = "REPLACE"
    max_surge_fixed       = 0
    max_unavailable_fixed = length(var.zones)
  }
}
