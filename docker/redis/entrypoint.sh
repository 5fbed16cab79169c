#!/bin/sh
# As the official image: without a configuration file, protected mode is off, since the
# server is reachable only on the containers' own network.
set -eu
if [ "${1:-}" = redis-server ]; then
  case "${2:-}" in
    *.conf) ;;
    *) set -- "$@" --protected-mode no ;;
  esac
fi
exec "$@"
