#!/usr/bin/env bash
# Installs the Debian packages the grader uses (the real FashionMNIST files and bubblewrap), and
# any named as arguments (the tests add chromium), once, when apt-get is there; says what to do otherwise.
set -euo pipefail
need=()
for package in dataset-fashion-mnist bubblewrap "$@"; do
  dpkg -s "$package" >/dev/null 2>&1 || need+=("$package")
done
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "note: cannot install ${need[*]} (no apt-get); use 'grader data --from DIR' for the dataset" >&2
  exit 0
fi
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
$sudo apt-get install -y -qq "${need[@]}"
