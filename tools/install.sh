#!/usr/bin/env bash
# Install dfkd_jax into ./.venv with pinned versions, and make sure Fashion-MNIST is present.
# Idempotent: a second run only checks. Options:
#   --dev     also the test tools and the optional extras: torch (torch==2.13.0, CPU) and tensorboard
#   --torch   only the torch extra
# Fashion-MNIST: the Debian package dataset-fashion-mnist is installed when its files are
# missing. Where apt is not available, set DFKD_JAX_SOURCE_DIR to a folder holding the four
# original IDX files (train-images-idx3-ubyte.gz, ...), or pass --config.data.source_dir=...
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
for arg in "$@"; do
  case "$arg" in
    --dev) extras="dev,torch,tensorboard" ;;
    --torch) extras="torch" ;;
    *) echo "install.sh: unknown option $arg (valid: --dev, --torch)" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[install] creating .venv with $($python --version)"
  "$python" -m venv .venv
fi

stamp=".venv/.dfkd_jax_installed${extras:+_${extras//,/_}}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "[install] installing dfkd_jax${extras:+[$extras]} with the pinned versions in constraints.txt"
  .venv/bin/python -m pip install -q -c constraints.txt -e ".${extras:+[$extras]}"
  touch "$stamp"
else
  echo "[install] .venv is up to date"
fi

fmnist=/usr/share/datasets/fashion-mnist
if [ -n "${DFKD_JAX_SOURCE_DIR:-}" ]; then
  echo "[install] Fashion-MNIST: using DFKD_JAX_SOURCE_DIR=$DFKD_JAX_SOURCE_DIR"
elif [ -f "$fmnist/t10k-labels-idx1-ubyte.gz" ]; then
  echo "[install] Fashion-MNIST: found in $fmnist"
elif command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "[install] Fashion-MNIST: installing the Debian package dataset-fashion-mnist"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
else
  echo "[install] Fashion-MNIST is missing and apt-get is not available (or you are not root)." >&2
  echo "          Run 'sudo apt-get install dataset-fashion-mnist', or set DFKD_JAX_SOURCE_DIR to a folder" >&2
  echo "          with the four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz," >&2
  echo "          t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)." >&2
fi
