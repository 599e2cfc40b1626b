#!/usr/bin/env bash
# The project's test command: the whole suite on TensorFlow (the default backend), then the
# backend-agnostic tests (marked `multibackend`) on JAX and PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
echo "== TensorFlow: whole suite"
KERAS_BACKEND=tensorflow python -m pytest -q -p no:cacheprovider "$@"
for backend in jax torch; do
  echo "== ${backend}: multibackend tests"
  KERAS_BACKEND=$backend python -m pytest -q -p no:cacheprovider -m multibackend "$@"
done
