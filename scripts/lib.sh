# Shared helpers for the scripts in this folder (sourced, not run).

# The Debian packages that give a Rust toolchain with the wasm32 target. lld-14 is only
# *recommended* by libstd-rust-dev-wasm32, yet /usr/bin/rust-lld (the wasm linker) points to it.
DEBIAN_RUST_WASM=(rustc cargo libstd-rust-dev-wasm32 lld-14)
# Every Debian package setup.sh may install (with --browser and --dataset): what CI purges.
SETUP_PACKAGES=("${DEBIAN_RUST_WASM[@]}" wabt chromium dataset-fashion-mnist)

# require_node: stops with a clear message when Node does not satisfy package.json's engines
# (what the locked dev tools need: Vite 7 wants ^20.19.0 || >=22.12.0). Understands ranges of
# "^x.y.z" and ">=x.y.z" joined by "||".
require_node() {
  local have=${NODE_VERSION_OVERRIDE:-}
  if ! command -v node >/dev/null 2>&1; then
    echo "wasm-batchnorm: Node.js is needed (see engines in package.json); install it first" >&2
    return 1
  fi
  node -e '
    const range = require("./package.json").engines.node;
    const have = (process.argv[1] || process.versions.node).split(".").map(Number);
    const cmp = (a, b) => a.map((x, i) => x - b[i]).find((d) => d !== 0) ?? 0;
    const ok = range.split("||").some((alt) => {
      const [, op, v] = alt.trim().match(/^(\^|>=)(\d+\.\d+\.\d+)$/) ?? [];
      if (!v) throw new Error(`engines.node: cannot read "${alt.trim()}"`);
      const want = v.split(".").map(Number);
      return cmp(have, want) >= 0 && (op === ">=" || have[0] === want[0]);
    });
    if (!ok) {
      console.error(`wasm-batchnorm: Node.js ${have.join(".")} is too old or unsupported: the build and test tools need ${range} (package.json engines)`);
      process.exit(1);
    }
  ' "$have"
}

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

# probe_wasm_rustc RUSTC: builds a tiny no_std cdylib for wasm32 with RUSTC, which needs the
# target's core library and its linker (rust-lld) exactly as the crate does. Prints the
# compiler's errors on failure.
probe_wasm_rustc() {
  local dir status
  dir=$(mktemp -d)
  printf '#![no_std]\n#[panic_handler]\nfn p(_: &core::panic::PanicInfo) -> ! { loop {} }\n#[no_mangle]\npub extern "C" fn probe(x: u32) -> u32 { x + 1 }\n' >"$dir/probe.rs"
  "$1" --edition 2021 --crate-type cdylib --target wasm32-unknown-unknown -C opt-level=1 \
    -o "$dir/probe.wasm" "$dir/probe.rs" >"$dir/log" 2>&1 && [ -s "$dir/probe.wasm" ]
  status=$?
  [ $status -eq 0 ] || sed 's/^/    /' "$dir/log" >&2
  rm -rf "$dir"
  return $status
}

# rust_for_wasm: prints "CARGO RUSTC" for a toolchain that really builds for wasm32 (checked by
# building a probe, not by looking for package names): a rustup toolchain that has the target
# wins; otherwise Debian's /usr/bin/cargo and /usr/bin/rustc.
rust_for_wasm() {
  if command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown &&
    probe_wasm_rustc rustc 2>/dev/null; then
    echo "cargo rustc"
  elif [ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ] && probe_wasm_rustc /usr/bin/rustc 2>/dev/null; then
    echo "/usr/bin/cargo /usr/bin/rustc"
  else
    return 1
  fi
}

# explain_wasm_toolchain: says what is missing for the wasm build and how to install it.
explain_wasm_toolchain() {
  echo "wasm-batchnorm: no Rust toolchain here builds for wasm32-unknown-unknown." >&2
  local pkg
  for pkg in "${DEBIAN_RUST_WASM[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
      echo "  missing Debian package: $pkg" >&2
  done
  [ -e /usr/bin/rust-lld ] && [ ! -e "$(readlink -f /usr/bin/rust-lld)" ] &&
    echo "  /usr/bin/rust-lld points to $(readlink /usr/bin/rust-lld), which is not installed (package lld-14)" >&2
  if [ -x /usr/bin/rustc ]; then
    echo "  Debian's rustc fails on a probe build:" >&2
    probe_wasm_rustc /usr/bin/rustc || true
  fi
  echo "  Install: sudo apt-get install -y ${DEBIAN_RUST_WASM[*]}" >&2
  echo "  (or, with rustup and network access to its servers: rustup target add wasm32-unknown-unknown)" >&2
}
