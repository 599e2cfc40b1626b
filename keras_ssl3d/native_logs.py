"""TensorFlow's native start-up lines (``port.cc``, ``cudart_stub.cc``, ``cuInit`` ...), printed from C++ to file
descriptor 2 before its logging is set up: ``native_logs_filtered`` drops them and passes every other line on.
Used by ``import keras_ssl3d`` and by the CLI's ``start_keras`` (the bottom layer: both may import it).
"""

import contextlib
import os
import re
import sys
import tempfile

# absl/glog-style native lines: "I0000 00:00:17.. 123 port.cc:153] ...", absl's pre-init banner and
# the continuation line of cpu_feature_guard.
NATIVE_LOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d|^WARNING: All log messages before absl::InitializeLog"
                        r"|^To enable the following instructions")


def native_logs_wanted():
    """True when the user asked TensorFlow for every log line (``TF_CPP_MIN_LOG_LEVEL=0``, or set empty)."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3").strip() in ("0", "")


@contextlib.contextmanager
def native_logs_filtered():
    """Capture fd 2 for the duration and re-emit every line but TensorFlow's native log lines."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreter): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not NATIVE_LOG.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
