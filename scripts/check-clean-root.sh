#!/usr/bin/env bash
# Run the set-up and a smoke test of the COMMITTED tree (HEAD) in a clean Debian 12 root, to catch a missing
# install step before it lands. Run before every submission:
#   sudo scripts/check-clean-root.sh            set-up (scripts/setup.sh test) + smoke test
#   sudo scripts/check-clean-root.sh --full     set-up + scripts/test.sh (the whole suite; long)
#   options: --keep (leave the root for inspection), --refresh-base (debootstrap again), -- <pytest args>,
#            --reuse DIR (run again in a root kept by --keep: for debugging this script, not a clean check)
#
# How it works: `debootstrap --variant=minbase bookworm` once (cached as var/clean-root/base-bookworm.tar.gz,
# rebuilt after 7 days or with --refresh-base), unpacked into a fresh directory on every run; a `git clone` of
# this repository's HEAD (committed files only, not the working tree) at /root/trackerdcs; /proc, /sys, /dev
# mounted and resolv.conf copied, so apt, PyPI and npm are reachable; a policy-rc.d stops package scripts from
# starting daemons (a real machine would start them under systemd; the tests start their own instances).
# Everything inside runs with an empty environment and Debian's own python3 (3.11), never the host's.
#
# Smoke test: ruff; pytest on tests/foundation, tests/deploy/test_manifests.py and the Node-RED flow tests;
# `dcs-sim --check` (the whole simulation stack of scripts/sim.sh starts, reports and stops); the pod tests.
# What the clean root cannot do is printed at the end (see README, "Development").
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "check-clean-root: run as root (debootstrap, chroot, mount)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "check-clean-root: apt-get install debootstrap" >&2; exit 1; }

full=0 keep=0 refresh=0 reuse="" pytest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --full) full=1 ;;
    --keep) keep=1 ;;
    --reuse) reuse=$(cd "$2" && pwd); keep=1; shift ;;
    --refresh-base) refresh=1 ;;
    --) shift; pytest_args=("$@"); break ;;
    *) echo "check-clean-root: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

cache="$repo/var/clean-root"
base="$cache/base-bookworm.tar.gz"
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$cache"
t0=$(date +%s)
say() { printf '[clean-root %4ds] %s\n' $(($(date +%s) - t0)) "$*"; }

if [ "$refresh" = 1 ] || [ ! -s "$base" ] || [ -n "$(find "$base" -mtime +7)" ]; then
  say "debootstrap --variant=minbase bookworm ($mirror)"
  tmp="$cache/debootstrap.$$"
  rm -rf --one-file-system "$tmp"
  debootstrap --variant=minbase bookworm "$tmp" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  tar -C "$tmp" -czf "$base.new" . && mv "$base.new" "$base"
  rm -rf --one-file-system "$tmp"
fi

root=${reuse:-"$cache/root.$(date +%Y%m%d-%H%M%S)"}
mkdir -p "$root"
cleanup() {
  local m
  for _pass in 1 2 3; do  # podman's overlay mounts, the caches, /dev..., then the root itself
    for m in $(findmnt -rn -o TARGET | grep "^$root/" | sort -r); do
      umount -R "$m" 2>/dev/null || umount -R -l "$m" 2>/dev/null || true
    done
    if mountpoint -q "$root"; then umount -R "$root" 2>/dev/null || umount -R -l "$root" 2>/dev/null || true; fi
  done
  if findmnt -rn -o TARGET | grep -q "^$root\(/\|$\)"; then
    echo "check-clean-root: mounts left under $root, not removing it" >&2
  elif [ "$keep" = 1 ]; then
    say "root kept at $root"
  else
    rm -rf --one-file-system "$root"
  fi
}
trap cleanup EXIT

if [ -n "$reuse" ]; then
  say "REUSING $root (not a clean check)"
else
  say "unpack base into $root"
  tar -C "$root" -xzf "$base"
  say "git clone of HEAD ($(git -C "$repo" rev-parse --short HEAD), committed files only)"
  git clone -q --no-hardlinks "$repo" "$root/root/trackerdcs"
  git -C "$root/root/trackerdcs" checkout -q --detach "$(git -C "$repo" rev-parse HEAD)"
fi

cp /etc/resolv.conf "$root/etc/resolv.conf"
# The site's network, not a project install step: where HTTPS goes through a proxy with its own CA (as in
# this sandbox), the host's local CA certificates are trusted in the root too (ca-certificates, installed by
# setup.sh, picks them up), and pip and npm are pointed at the system bundle (pip ships its own by default).
site_env=""
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  bundle=/etc/ssl/certs/ca-certificates.crt
  site_env="PIP_CERT=$bundle NODE_EXTRA_CA_CERTS=$bundle"
  say "site CA certificates carried in: $(cd /usr/local/share/ca-certificates && echo *.crt)"
fi
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod +x "$root/usr/sbin/policy-rc.d"
echo "deb $mirror bookworm main" >"$root/etc/apt/sources.list"
echo "deb $mirror bookworm-updates main" >>"$root/etc/apt/sources.list"
echo "deb http://deb.debian.org/debian-security bookworm-security main" >>"$root/etc/apt/sources.list"
# The root is a mount point of its own: podman unpacks image layers after remounting / in a private mount
# namespace, which fails in a chroot whose / is a plain directory ("remount /, flags: 0x44000: invalid argument").
mount --bind "$root" "$root" && mount --make-private "$root"
# Download caches only (apt's .debs, pip's wheels, npm's tarballs) are kept between runs, under var/clean-root/
# cache: every package is still installed from scratch into the fresh root, just not downloaded again.
for c in apt:var/cache/apt/archives pip:root/.cache/pip npm:root/.npm; do
  mkdir -p "$cache/cache/${c%%:*}" "$root/${c#*:}"
  [ "${c%%:*}" = apt ] && mkdir -p "$cache/cache/apt/partial"
  mount --bind "$cache/cache/${c%%:*}" "$root/${c#*:}"
done
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys" && mount --make-rslave "$root/sys"
mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev"

inside() {  # run a command in the root, empty environment, the chroot's own PATH
  chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb $site_env \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    bash -c "cd /root/trackerdcs && $1"
}

status=0
step() {  # step NAME COMMAND: run it inside, record failure, keep going
  say "$1"
  if inside "$2"; then say "$1: ok"; else say "$1: FAILED (exit $?)"; status=1; fi
}

say "set-up: scripts/setup.sh test (log: /root/setup.log in the root)"
if ! inside 'scripts/setup.sh test >/root/setup.log 2>&1'; then
  tail -40 "$root/root/setup.log"
  say "scripts/setup.sh test FAILED"
  exit 1
fi
tail -3 "$root/root/setup.log"
inside 'echo "python: $(.venv/bin/python -c "import sys; print(sys.version.split()[0], sys.executable, sys.base_prefix)")"'

if [ "$full" = 1 ]; then
  step "scripts/test.sh ${pytest_args[*]}" "scripts/test.sh -q -p no:cacheprovider ${pytest_args[*]}"
else
  step "ruff check + format --check" '.venv/bin/ruff check . && .venv/bin/ruff format --check . >/dev/null'
  step "pytest (foundation, manifests, Node-RED flows)" \
    ".venv/bin/python -m pytest -q -p no:cacheprovider tests/foundation tests/deploy/test_manifests.py \
     tests/gateway/test_node_red.py ${pytest_args[*]}"
  step "dcs-sim --check (the scripts/sim.sh stack starts, reports, stops)" \
    '.venv/bin/dcs-sim --check --var /root/sim --mqtt-port 21883 --node-red-port 21880 --run-seconds 5'
  # The pod: images built with debootstrap, `podman play kube` (needs catatonit), MQTT into the pod. Left out:
  # the liveness-probe test: in a chroot `podman healthcheck run` reports every container unhealthy.
  step "pod (tests/deploy/test_pod.py, without the liveness-probe test)" \
    '.venv/bin/python -m pytest -q -p no:cacheprovider tests/deploy/test_pod.py \
     --deselect tests/deploy/test_pod.py::test_every_containers_liveness_probe_passes_inside_the_pod'
fi

say "done: $([ "$status" = 0 ] && echo PASSED || echo FAILED)"
exit "$status"
