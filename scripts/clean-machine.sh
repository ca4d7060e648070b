#!/usr/bin/env bash
# CI only: makes this machine as fresh as a new one for everything the project installs itself,
# so that a missing install step fails in CI instead of on a user's machine. Purges the Debian
# packages that scripts/setup.sh installs (and what only they pulled in), and removes
# node_modules and the build outputs. Refuses to run outside CI.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

if [ "${CI:-}" != true ]; then
  echo "clean-machine.sh: removes installed packages; runs only with CI=true" >&2
  exit 2
fi
installed=()
for pkg in "${SETUP_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" && installed+=("$pkg")
done
if [ ${#installed[@]} -gt 0 ]; then
  echo "clean-machine: purging ${installed[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get purge -y -q "${installed[@]}" >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get autoremove --purge -y -q >/dev/null
fi
rm -rf node_modules dist target
echo "clean-machine: done; $(command -v rust-lld wasm-objdump chromium /usr/bin/rustc 2>/dev/null | wc -l) of rust-lld, wasm-objdump, chromium, /usr/bin/rustc left" >&2
