#!/usr/bin/env bash
# Install what the deployment needs on a Debian 12 host: podman (+ runc, the runtime that works here, and
# catatonit, the init of the pause container that `podman play kube` builds: only a Recommends of podman, so
# --no-install-recommends leaves it out and every pod fails with 'finding pause binary'), debootstrap (to build
# the local base image), mosquitto (for mosquitto_passwd) and the containers.conf ulimits podman 4.3 needs in
# this environment. Idempotent: safe to run again.
#   sudo scripts/setup-deploy.sh
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "run as root (apt-get and /etc/containers)" >&2; exit 1; }

want=(podman runc catatonit debootstrap uidmap slirp4netns fuse-overlayfs containernetworking-plugins mosquitto python3-yaml)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Podman 4.3 here: crun fails, runc works; the default ulimits must stay within the sandbox's hard limits.
conf=/etc/containers/containers.conf
mkdir -p /etc/containers
if ! grep -q '^# trackerdcs' "$conf" 2>/dev/null; then
  [ -f "$conf" ] && cp -n "$conf" "$conf.before-trackerdcs"
  cat > "$conf" <<'CONF'
# trackerdcs: written by scripts/setup-deploy.sh
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
CONF
  echo "wrote $conf" >&2
fi
podman --version >&2
