#!/usr/bin/env bash
# The quick start's second command: set this machine up (idempotent), then every check CI makes: lint,
# type check, the test suite, and the runtime tests on the devices' Pythons.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: utils/test.sh [--no-apt] [--no-device-pythons] [-- PYTEST OPTIONS...]

Sets this machine up with utils/setup_dev.sh (quick when everything is already there), then runs:
  1. ruff check .
  2. mypy, when pyproject.toml configures it ([tool.mypy])
  3. shellcheck on every shell script (utils/, benchmarks/, .ci/)
  4. python3 -m pytest -q -ra [PYTEST OPTIONS...] (the whole suite, benchmark smoke runs included)
  5. .ci/device-pythons.sh 3.8 3.10: the runtime tests on the Jetsons' Pythons (JetPack 5 and 6),
     on the models and images step 4 left in the test cache

Options:
  --no-apt             skip the apt step of the set-up (packages already installed, or no root)
  --no-device-pythons  skip step 5 (it installs pyenv Pythons 3.8 and 3.10 when missing)
  --                   everything after it goes to pytest, e.g. -- -x tests/test_docs.py
  -h, --help           show this help
USAGE
}

setup_args=()
pytest_args=()
device_pythons=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-apt) setup_args+=(--no-apt); shift ;;
    --no-device-pythons) device_pythons=0; shift ;;
    --) shift; pytest_args=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument '$1' (options for pytest go after --; see --help)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash utils/setup_dev.sh "${setup_args[@]}"

echo "==> ruff check ."
python3 -m ruff check .
if grep -q '^\[tool.mypy\]' pyproject.toml; then
  echo "==> mypy"
  python3 -m mypy
fi
echo "==> shellcheck"
shellcheck utils/*.sh benchmarks/*.sh .ci/run .ci/*.sh

echo "==> python3 -m pytest -q -ra ${pytest_args[*]}"
python3 -m pytest -q -ra "${pytest_args[@]}"

if [[ "$device_pythons" -eq 1 ]]; then
  echo "==> .ci/device-pythons.sh 3.8 3.10"
  bash .ci/device-pythons.sh 3.8 3.10
fi
