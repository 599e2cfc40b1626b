#!/usr/bin/env bash
# The project's test command: the whole suite on TensorFlow (the default backend), then the
# backend-agnostic tests (marked `multibackend`) on JAX and PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
# Two pytest processes (pytest-xdist), each test file kept in one (its module fixtures are built once):
# much of a test is single-threaded tracing and compiling, so two processes on 2 cores measured 1.7x
# faster (TensorFlow phase 22.5 -> 13.4 min). TEST_WORKERS=1 runs in this process.
workers="${TEST_WORKERS:-2}"
parallel=()
if [ "$workers" -gt 1 ]; then parallel=(-n "$workers" --dist loadfile); fi
echo "== TensorFlow: whole suite"
KERAS_BACKEND=tensorflow python -m pytest -q -p no:cacheprovider ${parallel[@]+"${parallel[@]}"} --durations=15 "$@"
# The tests' tiny models are compile-bound on JAX: XLA's CPU backend without LLVM's optimisation
# passes compiles them ~3x faster (measured: tests/test_adapt.py 118 s -> 38 s); the tests pass unchanged.
echo "== jax: multibackend tests"
KERAS_BACKEND=jax XLA_FLAGS="${XLA_FLAGS:---xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true}" \
  python -m pytest -q -p no:cacheprovider ${parallel[@]+"${parallel[@]}"} -m multibackend "$@"
echo "== torch: multibackend tests"
KERAS_BACKEND=torch python -m pytest -q -p no:cacheprovider ${parallel[@]+"${parallel[@]}"} -m multibackend "$@"
