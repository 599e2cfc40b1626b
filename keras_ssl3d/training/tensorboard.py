"""TensorBoard logs of a training run: the standard ``keras.callbacks.TensorBoard``, epoch scalars only.

No graph and no profiler: both are TensorFlow-backend features, and the per-epoch scalars (losses,
metrics, learning rate) are what works on every backend (the writer is TensorFlow's summary API,
and TensorFlow is a dependency of this package).
"""


def tensorboard_callbacks(log_dir):
    """``[keras.callbacks.TensorBoard(log_dir)]``, or ``[]`` when ``log_dir`` is None (logging off)."""
    if log_dir is None:
        return []
    import importlib.util

    import keras

    if importlib.util.find_spec("tensorboard") is None:
        from keras_ssl3d.errors import ConfigError

        raise ConfigError("TensorBoard logs need the tensorboard package (pip install tensorboard); "
                          "or pass --tensorboard none")

    return [keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False, update_freq="epoch",
                                        profile_batch=0)]
