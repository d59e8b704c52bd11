# Bake prepull and pre-pulled container images into a machine image: the HCL2
# form of prepull.json, with the same two builds.
#   source "digitalocean" "droplet": a droplet snapshot (shell provisioner over SSH)
#   source "null" "local":           the same provisioner on this machine (a build
#                                    VM or CI), e.g. packer build -only='null.local' .
# Written for Packer 1.6.6 (Debian 12): no required_plugins block and no
# `packer init`, which need Packer 1.7 and a network; the digitalocean and null
# builders are built into 1.6. See README.md, "Packer".

variable "prepull_deb" {
  type        = string
  default     = "prepull_0.1.0_amd64.deb"
  description = "The prepull .deb to install: a path here (uploaded), or an http(s) URL."
}

variable "prepull_config" {
  type        = string
  default     = "config.json"
  description = "config.json to install as /etc/prepull/config.json."
}

variable "bake_deadline" {
  type    = string
  default = "2h"
}

variable "do_api_token" {
  type      = string
  default   = env("DIGITALOCEAN_API_TOKEN")
  sensitive = true
}

variable "do_image" {
  type    = string
  default = "docker-20-04"
}

variable "do_region" {
  type    = string
  default = "fra1"
}

variable "do_size" {
  type    = string
  default = "s-2vcpu-4gb"
}

variable "snapshot_name" {
  type    = string
  default = ""
}

locals {
  snapshot_name = var.snapshot_name != "" ? var.snapshot_name : "prepull-${formatdate("YYYYMMDDhhmmss", timestamp())}"
}

source "digitalocean" "droplet" {
  api_token     = var.do_api_token
  image         = var.do_image
  region        = var.do_region
  size          = var.do_size
  ssh_username  = "root"
  snapshot_name = local.snapshot_name
}

source "null" "local" {
  communicator = "none"
}

build {
  description = "prepull and pre-pulled container images, baked into a machine image"
  sources     = ["source.digitalocean.droplet", "source.null.local"]

  provisioner "file" {
    only        = ["digitalocean.droplet"]
    source      = var.prepull_deb
    destination = "/tmp/prepull.deb"
  }

  provisioner "file" {
    only        = ["digitalocean.droplet"]
    source      = var.prepull_config
    destination = "/tmp/prepull-config.json"
  }

  provisioner "shell" {
    only   = ["digitalocean.droplet"]
    script = "${path.root}/provision.sh"
    environment_vars = [
      "PREPULL_DEB=/tmp/prepull.deb",
      "PREPULL_CONFIG_SRC=/tmp/prepull-config.json",
      "PREPULL_BAKE_DEADLINE=${var.bake_deadline}",
    ]
  }

  provisioner "shell-local" {
    only   = ["null.local"]
    script = "${path.root}/provision.sh"
    environment_vars = [
      "PREPULL_DEB=${var.prepull_deb}",
      "PREPULL_CONFIG_SRC=${var.prepull_config}",
      "PREPULL_BAKE_DEADLINE=${var.bake_deadline}",
    ]
  }
}
