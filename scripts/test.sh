#!/usr/bin/env bash
# The one test command. On a fresh Debian 12 machine, as root: installs what the suite
# needs (apt packages), builds the workspace and runs every test.
#   ./scripts/test.sh            # everything
#   ./scripts/test.sh <filter>   # only tests whose name contains <filter>
set -euo pipefail
cd "$(dirname "$0")/.."

need=(build-essential pkg-config clang libclang-dev protobuf-compiler etcd-server etcd-client curl python3-venv
      runc crun containernetworking-plugins iproute2 docker-registry skopeo umoci busybox-static nftables util-linux faketime fiu-utils)
missing=()
for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "==> installing ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "test.sh: need root to install ${missing[*]} (or install them first)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "test.sh: cargo not found; install the Rust toolchain (rustup) first" >&2; exit 1; }
command -v etcdctl >/dev/null || { echo "test.sh: etcdctl missing after install" >&2; exit 1; }

# kubectl 1.27/1.32/1.33 come with the machine (google-cloud-sdk); the API tests use them.
for v in 1.27 1.32 1.33; do
    [ -x "/usr/lib/google-cloud-sdk/bin/kubectl.$v" ] || { echo "test.sh: /usr/lib/google-cloud-sdk/bin/kubectl.$v is missing" >&2; exit 1; }
done

# The Python `kubernetes` client and Prometheus' text-format parser, in a venv outside the
# clone (reused across runs).
venv="${KEELSON_VENV:-$HOME/.cache/keelson/venv}"
if ! "$venv/bin/python" -c "import kubernetes, prometheus_client" 2>/dev/null; then
    echo "==> creating $venv with the kubernetes client and prometheus_client"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "kubernetes==37.*" "prometheus-client==0.*"
fi
export KEELSON_PYTHON="$venv/bin/python"

# Builds are reused across clean clones (RocksDB's C++ alone is ~15 minutes on 2 cores).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/keelson/target}"
# No incremental caches: CI builds each clean clone once, and they grow by gigabytes a run.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export ETCDCTL_API=3

if cargo fmt --version >/dev/null 2>&1; then
    echo "==> cargo fmt --check"
    cargo fmt --all -- --check
fi

echo "==> build (workspace, tests included)"
cargo test --workspace --no-run

echo "==> tests"
# One test at a time: the multi-master tests run real processes and time elections.
cargo test --workspace -- --test-threads 1 "$@"
echo "==> all tests passed"
