#!/usr/bin/env bash
# Install the SLURM and munge packages needed for a single-node local cluster
# (Debian/Ubuntu, as root), plus shellcheck for the recipes' lint test.
# Idempotent, quiet, and fast when already installed: it exits 0 at once when
# dpkg lists every package as installed (or, without dpkg, every binary is on PATH).
#
# Environment:
#   SLURM_PACKAGES  packages to install   (default: "slurmctld slurmd slurm-client munge shellcheck")
#   APT_UPDATE      1 = run apt-get update first (default: 1)
#
# Exit status: 0 installed (or already there), 1 cannot install (not root, no
# apt-get, or apt failed; the reason is printed on stderr).
set -euo pipefail

SLURM_PACKAGES=${SLURM_PACKAGES:-"slurmctld slurmd slurm-client munge shellcheck"}
APT_UPDATE=${APT_UPDATE:-1}

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in $SLURM_PACKAGES; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
  done
else
  for b in sbatch srun squeue scontrol scancel sinfo slurmctld slurmd munged munge unmunge; do
    PATH="$PATH:/usr/sbin:/sbin" command -v "$b" >/dev/null 2>&1 || missing+=("$b")
  done
fi
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install_slurm.sh: missing ${missing[*]}; installing needs root" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_slurm.sh: missing ${missing[*]}; no apt-get on this machine" >&2
  exit 1
fi

log=$(mktemp -t install_slurm.XXXXXX.log)
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086  # SLURM_PACKAGES is a word list on purpose
if { [ "$APT_UPDATE" != 1 ] || apt-get update -qq; } >"$log" 2>&1 \
   && apt-get install -y -qq $SLURM_PACKAGES >>"$log" 2>&1; then
  rm -f "$log"
  exit 0
fi
echo "install_slurm.sh: apt-get failed installing $SLURM_PACKAGES; last lines of $log:" >&2
tail -n 15 "$log" >&2
exit 1
