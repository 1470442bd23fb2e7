#!/usr/bin/env bash
# The whole test suite (README's second command runs this after installing).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m pytest -q -p no:cacheprovider "$@"
