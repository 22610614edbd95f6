#!/usr/bin/env bash
# Installs what stream_events needs to build, test and demo on Debian 12.
# As root it uses apt-get; otherwise it names the missing packages and stops.
set -euo pipefail

PKGS=(postgresql-15 postgresql-client-15 postgresql-server-dev-15 libpq-dev
      libipc-run-perl libpcre2-dev pkg-config make gcc)

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || true
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "setup: missing packages: ${missing[*]}" >&2
    echo "setup: run as root, or: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
