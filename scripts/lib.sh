# Shared helpers for the scripts in this folder (sourced, not run).

# ensure_debian_packages PKG...: installs the Debian packages that are missing, idempotently.
# Where it cannot (not root, no apt-get), it stops and says what to install by hand.
ensure_debian_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
    echo "wasm-batchnorm: missing Debian packages: ${missing[*]}" >&2
    echo "  This script installs them only as root on a Debian-like system. Install them by hand:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    return 1
  fi
  echo "wasm-batchnorm: installing ${missing[*]} (apt-get)" >&2
  # A fresh machine has no package lists; refresh them at most once an hour.
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null | head -1)" ]; then
    apt-get update -q >&2 || return 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# rust_for_wasm: prints "CARGO RUSTC" for a toolchain that has the wasm32-unknown-unknown target:
# a rustup toolchain that has it wins; otherwise Debian's (rustc, cargo, libstd-rust-dev-wasm32).
rust_for_wasm() {
  if command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    echo "cargo rustc"
  elif [ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/wasm32-unknown-unknown ]; then
    echo "/usr/bin/cargo /usr/bin/rustc"
  else
    return 1
  fi
}
