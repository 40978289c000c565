# Sourced by the container scripts: podman configured through environment
# variables only (nothing under /etc changes):
# runc (crun fails on hybrid cgroups here), rlimits the host allows, overlay
# storage under a work dir, docker image format (OCI drops HEALTHCHECK).
PODMAN_WORK=${PODMAN_WORK:-/var/tmp/mailraven-podman}
mkdir -p "$PODMAN_WORK/storage" "$PODMAN_WORK/run" "$PODMAN_WORK/networks"
cat > "$PODMAN_WORK/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$(ulimit -Sn):$(ulimit -Hn)", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$PODMAN_WORK/events.log"

[network]
network_config_dir = "$PODMAN_WORK/networks"
CONF
cat > "$PODMAN_WORK/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$PODMAN_WORK/storage"
runroot = "$PODMAN_WORK/run"
CONF
export CONTAINERS_CONF="$PODMAN_WORK/containers.conf"
export CONTAINERS_STORAGE_CONF="$PODMAN_WORK/storage.conf"
export BUILDAH_FORMAT=docker
BASE_IMAGE=localhost/debian:bookworm-slim
