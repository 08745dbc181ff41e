#!/usr/bin/env bash
# Installs the Debian 12 packages gdn builds with; does nothing when they are all there.
set -euo pipefail
pkgs=(build-essential cmake libopenblas-dev libomp-dev libgtest-dev libbenchmark-dev
      libcli11-dev nlohmann-json3-dev python3-torch python3-numpy libsentencepiece-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "gdn setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
