#!/usr/bin/env bash
# `make compose-test`: the docker compose deployment run for real, on a Docker engine of
# its own. Installs Docker from Debian's packages where missing, starts a dockerd with its
# own data root and socket (no default bridge: every build runs with --network none, so
# none can reach an index), builds the base image from Debian packages (docker/base.sh),
# the stand-in postgres, redis and flower images on it and the gradwatch image from the
# wheelhouse, then runs tests/compose/ against the real docker-compose.yml with every image
# name overridden. Whatever happens, the trap removes every container, image, volume and
# network, stops that dockerd and puts back the iptables rules and the forwarding switch
# it changed. The host's own PostgreSQL and Redis are never touched: nothing publishes
# 5432 or 6379, and the test talks to 127.0.0.1:18400 (API) and :18401 (Flower) only.
set -euo pipefail
cd "$(dirname "$0")/../.."
started_all=$(date +%s.%N)

api_port=${GRADWATCH_COMPOSE_API_PORT:-18400}
flower_port=${GRADWATCH_COMPOSE_FLOWER_PORT:-18401}
# The base tarball is kept here between runs (its name changes with the apt sources and
# docker/base.sh): a warm rerun imports it instead of bootstrapping Debian again.
cache_dir=${GRADWATCH_COMPOSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gradwatch/compose}
project=gwcompose
tag=compose-test

installed=
if ! command -v dockerd >/dev/null || ! command -v docker-compose >/dev/null || ! command -v mmdebstrap >/dev/null; then
  echo "compose-test: installing docker.io, docker-compose and mmdebstrap from Debian"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
    docker.io docker-compose mmdebstrap >/dev/null
  installed=$(awk -v a="$started_all" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
fi

state=$(mktemp -d /var/tmp/gradwatch-compose.XXXXXX)
export DOCKER_HOST="unix://$state/docker.sock"
export COMPOSE_PROJECT_NAME=$project
figures=$state/figures
iptables-save > "$state/iptables.before" 2>/dev/null || true
nft list tables > "$state/nft-tables.before" 2>/dev/null || true
forwarding_before=$(cat /proc/sys/net/ipv4/ip_forward)
ip -o link show type bridge | awk -F': ' '{print $2}' > "$state/bridges.before"
dockerd_pid=

cleanup() {
  status=$?
  set +e
  cleanup_started=$(date +%s.%N)
  if [ -n "$dockerd_pid" ] && kill -0 "$dockerd_pid" 2>/dev/null; then
    docker-compose --env-file "$state/compose.env" down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1
    docker ps -aq | xargs -r docker rm -f >/dev/null 2>&1
    kill -TERM "$dockerd_pid"
    for _ in $(seq 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$dockerd_pid" 2>/dev/null
  fi
  # A network that `down` did not remove (a failure before it) leaves its bridge in the
  # host's namespace after dockerd exits: remove the bridges that were not there before.
  ip -o link show type bridge | awk -F': ' '{print $2}' | grep -vxF -f "$state/bridges.before" \
    | xargs -r -n1 ip link delete
  # Its images, layers and volumes go with its data root (removed below, faster than
  # `docker system prune` deleting them one by one); first anything the engine left
  # mounted under its state folder, deepest first.
  awk -v root="$state" 'index($2, root) == 1 {print $2}' /proc/mounts | sort -r | xargs -r umount -l
  # dockerd adds its chains and rules (and sets FORWARD's policy to DROP) and turns
  # forwarding on: put back the rules as they were before it started, unless another
  # Docker engine (whose rules they may now hold) runs on this machine. A machine with no
  # rules at all saves nothing: then the tables dockerd wrote to are restored empty, and on
  # the nf_tables backend the tables that did not exist before are deleted whole.
  if command -v iptables-restore >/dev/null && ! pgrep -x dockerd >/dev/null; then
    if [ -s "$state/iptables.before" ]; then
      iptables-restore < "$state/iptables.before"
    else
      printf '%s\n' '*filter' ':INPUT ACCEPT [0:0]' ':FORWARD ACCEPT [0:0]' ':OUTPUT ACCEPT [0:0]' COMMIT \
        '*nat' ':PREROUTING ACCEPT [0:0]' ':INPUT ACCEPT [0:0]' ':OUTPUT ACCEPT [0:0]' \
        ':POSTROUTING ACCEPT [0:0]' COMMIT | iptables-restore
    fi
    if command -v nft >/dev/null; then
      nft list tables | grep -vxF -f "$state/nft-tables.before" | while read -r _ family table; do
        nft delete table "$family" "$table"
      done
    fi
  fi
  echo "$forwarding_before" > /proc/sys/net/ipv4/ip_forward
  rm -rf "$state"
  awk -v a="$started_all" -v c="$cleanup_started" -v b="$(date +%s.%N)" -v status="$status" \
    -v installed="${installed:-already installed}" 'BEGIN {
      printf "compose-test: exit %s after %.1f s in all (Docker from Debian: %s%s; cleanup %.1f s)\n",
        status, b - a, installed, installed ~ /^[0-9]/ ? " s" : "", b - c}'
  exit $status
}
trap cleanup EXIT
# Interrupted (CI's timeout, Ctrl-C): a failure, and the EXIT trap cleans up.
trap 'exit 130' INT
trap 'exit 143' TERM

dockerd --data-root "$state/data" --exec-root "$state/exec" --pidfile "$state/dockerd.pid" \
  --host "$DOCKER_HOST" --bridge=none --log-level=warn > "$state/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 60); do docker version >/dev/null 2>&1 && break; sleep 0.5; done
docker version --format 'compose-test: dockerd {{.Server.Version}} ({{.Server.Os}})' \
  || { cat "$state/dockerd.log"; exit 1; }

now() { date +%s.%N; }
# time LABEL COMMAND...: runs it and records its seconds under LABEL.
timed() {
  local label=$1 started
  shift
  started=$(now)
  "$@"
  awk -v a="$started" -v b="$(now)" -v label="$label" 'BEGIN {printf "%s %.1f\n", label, b - a}' >> "$figures"
}
build() {  # build IMAGE DOCKERFILE [ARGS...]: no network, the repository as the context
  local image=$1 dockerfile=$2
  shift 2
  docker build --network none -t "$image" -f "$dockerfile" "$@" . > "$state/build.log" 2>&1 \
    || { cat "$state/build.log"; return 1; }
}

base=gradwatch-compose-base:$tag
images=(
  "postgres gradwatch-compose-postgres:$tag docker/postgres/Dockerfile"
  "redis gradwatch-compose-redis:$tag docker/redis/Dockerfile"
  "gradwatch gradwatch:$tag Dockerfile"
  "flower gradwatch-compose-flower:$tag docker/flower/Dockerfile"
)
if compgen -G "$cache_dir/base-*.tar" >/dev/null; then base_kind=warm; else base_kind=cold; fi
timed "build base ($base_kind: mmdebstrap | docker import)" docker/base.sh "$base" "$cache_dir"
for pass in cold warm; do
  for entry in "${images[@]}"; do
    read -r name image dockerfile <<< "$entry"
    timed "build $name ($pass)" build "$image" "$dockerfile" --build-arg BASE_IMAGE="$base" --build-arg OFFLINE=1
  done
done
for image in "$base" $(printf '%s\n' "${images[@]}" | awk '{print $2}'); do
  docker image inspect --format '{{.Size}}' "$image" \
    | awk -v image="$image" '{printf "size %s %.0f MB\n", image, $1 / 1e6}' >> "$figures"
done
echo "compose-test: images (seconds to build, sizes; machine: $(uptime | sed 's/.*load/load/'))"
sed 's/^/  /' "$figures"

secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(24))'; }
cat > "$state/compose.env" <<ENV
POSTGRES_PASSWORD=$(secret)
FLOWER_BASIC_AUTH=flower:$(secret)
GRADWATCH_API_BIND=127.0.0.1
GRADWATCH_API_PUBLISHED_PORT=$api_port
GRADWATCH_FLOWER_PUBLISHED_PORT=$flower_port
GRADWATCH_IMAGE=gradwatch:$tag
GRADWATCH_POSTGRES_IMAGE=gradwatch-compose-postgres:$tag
GRADWATCH_REDIS_IMAGE=gradwatch-compose-redis:$tag
GRADWATCH_FLOWER_IMAGE=gradwatch-compose-flower:$tag
GRADWATCH_ALLOW_DOWNLOAD=false
GRADWATCH_WORKER_TORCH_THREADS=1
GRADWATCH_WORKER_POLL_S=0.2
GRADWATCH_HEARTBEAT_STALE_S=10
GRADWATCH_REAPER_INTERVAL_S=1
GRADWATCH_REDISPATCH_AFTER_S=15
GRADWATCH_DISPATCH_INTERVAL_S=2
ENV

GRADWATCH_COMPOSE_ENV_FILE="$state/compose.env" \
GRADWATCH_COMPOSE_API_URL="http://127.0.0.1:$api_port" \
GRADWATCH_COMPOSE_FLOWER_URL="http://127.0.0.1:$flower_port" \
GRADWATCH_COMPOSE_DATA_DIR="${GRADWATCH_DATA_DIR:-$(cd .. && pwd)/shared/data}" \
  .venv/bin/python -m pytest tests/compose -p no:cacheprovider -q -s -ra --durations=0 "$@"
