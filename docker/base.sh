#!/usr/bin/env bash
# The base image of the compose test, from Debian packages and no registry of images:
# mmdebstrap (the host's own apt sources) writes a bookworm root file system with Python
# and the PostgreSQL and Redis servers, and `docker import` makes it an image.
#   docker/base.sh IMAGE [CACHE_DIR]
# With CACHE_DIR, the tarball is kept there under a name that changes with the package
# list and the apt sources, and a later run imports it instead of bootstrapping again.
set -euo pipefail
image=$1
cache_dir=${2:-}
suite=bookworm
packages=python3,python3-venv,postgresql,redis-server,ca-certificates

sources=$(ls /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
# shellcheck disable=SC2086  # one word per file
key=$(cat "$0" $sources | sha256sum | cut -c1-16)
tarball=${cache_dir:+$cache_dir/base-$key.tar}
if [ -z "$tarball" ] || [ ! -s "$tarball" ]; then
  out=${tarball:-$(mktemp --suffix=.tar)}
  mkdir -p "$(dirname "$out")"
  # No documentation, manual pages or translations in the image; no cluster made by the
  # postgresql package (the stand-in postgres image makes its own in PGDATA). dpkg skips
  # its fsync per unpacked file (force-unsafe-io, as the official Debian images do): the
  # root is a scratch folder turned into a tarball, and a crash simply bootstraps again.
  mmdebstrap --quiet --variant=minbase --include="$packages" --dpkgopt=force-unsafe-io \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --essential-hook='mkdir -p "$1/etc/postgresql-common/createcluster.d" && echo "create_main_cluster = false" > "$1/etc/postgresql-common/createcluster.d/no-main-cluster.conf"' \
    "$suite" "${out%.tar}.partial.tar"
  mv "${out%.tar}.partial.tar" "$out"
  tarball=$out
fi
docker import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' "$tarball" "$image" >/dev/null
[ -n "$cache_dir" ] || rm -f "$tarball"
