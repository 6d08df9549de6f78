#!/bin/sh
# The official Redis image is built with protected mode off, because other containers reach it
# over the network; Debian's build keeps it on, which refuses every client but loopback when no
# password is set. This wrapper gives Debian's server the official default. A config file, when
# given, stays the first argument, and later arguments can still turn protected mode back on.
set -eu
if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
  config="$1"
  shift
  exec /usr/bin/redis-server "$config" --protected-mode no "$@"
fi
exec /usr/bin/redis-server --protected-mode no "$@"
