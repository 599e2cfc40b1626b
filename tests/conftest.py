import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as keras_ssl3d sets it (conftest imports keras first)
# The hub is unreachable here: tests that need it start their own server on 127.0.0.1.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# huggingface_hub reads HF_HUB_OFFLINE/HF_ENDPOINT/HF_HOME once, when first imported: import it now, with
# the clean environment, so a test that sets HF_HUB_OFFLINE=1 for itself cannot make it stick.
import huggingface_hub.constants  # noqa: E402,F401  (the package itself loads lazily)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    np.random.seed(0)
    yield
    # free_memory=False: no gc.collect() per test (it grew to ~3 s per test late in the suite);
    # Python's own collector still frees the models.
    keras.backend.clear_session(free_memory=False)


def pytest_report_header(config):
    return f"keras backend: {keras.backend.backend()}"
