#!/usr/bin/env bash
# Builds the air-gapped base image: Debian bookworm (minbase) with the distribution's Python 3.11,
# made with debootstrap from a Debian mirror and imported into the local Docker engine.
# It stands in for the public python:3.11-slim-bookworm image where no container registry is reachable.
#
# Settings (environment):
#   LOCAL_BASE_IMAGE  tag to create                 (default: inference-base:bookworm)
#   DEBIAN_MIRROR     Debian mirror URL             (default: http://deb.debian.org/debian)
#   DEBIAN_SUITE      Debian release                (default: bookworm)
# Options: --force rebuilds even when the tag exists; --dry-run prints the steps.
set -euo pipefail

image="${LOCAL_BASE_IMAGE:-inference-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite="${DEBIAN_SUITE:-bookworm}"
packages="python3,python3-venv,python-is-python3,ca-certificates"
force=false
dry_run=false

for arg in "$@"; do
    case "$arg" in
        --force) force=true ;;
        --dry-run) dry_run=true ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-base.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
    esac
done

if [[ "$force" == false ]] && docker image inspect "$image" >/dev/null 2>&1; then
    echo "build-base.sh: $image already exists (use --force to rebuild)"
    exit 0
fi

if [[ "$dry_run" == true ]]; then
    echo "+ debootstrap --variant=minbase --include=$packages $suite ROOTFS $mirror"
    echo "+ tar -C ROOTFS -c . | docker import --change 'CMD [\"python3\"]' - $image"
    exit 0
fi

if [[ "$(id -u)" != 0 ]]; then
    echo "build-base.sh: debootstrap needs root; run as root or provide BASE_IMAGE" >&2
    exit 1
fi
if ! command -v debootstrap >/dev/null; then
    # Fresh build images (CodeBuild's among them) ship without package lists: update them first.
    echo "build-base.sh: installing debootstrap (apt-get update, apt-get install)"
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null; } \
        || { echo "build-base.sh: could not install debootstrap (apt-get update or install failed): check the network and the apt sources" >&2; exit 1; }
fi

rootfs="$(mktemp -d /tmp/inference-base.XXXXXX)"
log="$rootfs.log"
trap 'rm -rf "$rootfs" "$log"' EXIT

echo "build-base.sh: debootstrap $suite from $mirror (about a minute)"
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$log" 2>&1 \
    || { tail -n 20 "$log" >&2; echo "build-base.sh: debootstrap failed (mirror: $mirror; set DEBIAN_MIRROR)" >&2; exit 1; }

# Slim the tree as the official slim images do: no package caches, lists, docs or logs.
rm -rf "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/* "$rootfs"/tmp/* "$rootfs"/root/.cache

tar -C "$rootfs" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "debootstrap --variant=minbase $suite ($mirror) + $packages" \
    - "$image" >/dev/null
echo "build-base.sh: built $image ($(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
