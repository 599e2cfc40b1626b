"""Memory a 3D encoder needs, estimated from its widths before anything is built or any data is read.

A typo such as ``--filters 8,16,100000`` used to end in a TensorFlow out-of-memory traceback after the
data were cached; ``--size 1024`` silently caches 4 GiB per channel of every subject. The estimate here
is a lower bound (the weights, and the largest single activation tensor of one step), so a refusal is
never wrong: what it refuses cannot run on this machine. No Keras import.
"""

from keras_ssl3d.errors import ConfigError
from keras_ssl3d.host import machine_memory

FLOAT_BYTES = 4
CACHE_WARNING_BYTES = 2**30  # one channel of one subject


def conv_parameters(k, cin, cout, bias):
    return k * cin * cout + (cout if bias else 0)


def _norm(norm, channels):
    return {"batch": 4 * channels, "group": 2 * channels, "instance": 2 * channels}.get(norm, 0)


def residual_block_parameters(cin, f, norm, projection, strides=1):
    bias = norm == "none"
    n = conv_parameters(27, cin, f, bias) + _norm(norm, f) + conv_parameters(27, f, f, bias) + _norm(norm, f)
    if projection or cin != f or strides != 1:
        n += conv_parameters(1, cin, f, bias) + _norm(norm, f)
    return n


def encoder_parameters(filters, in_channels=1, norm="batch", blocks_per_level=1):
    """Exact parameter count (trainable and not) of ``Encoder3D(in_channels, filters, ...)``: per level a residual
    block of two 3^3 convolutions with their normalisation, and a 1^3 projection where the width changes (the
    memory planner, ``keras_ssl3d.tasks.memory_plan``, counts with this too)."""
    total, cin = 0, int(in_channels)
    for level, f in enumerate(filters, start=1):
        for block in range(1, blocks_per_level + 1):
            total += residual_block_parameters(cin, f, norm, projection=level == 1 and block == 1)
            cin = f
    return total


def largest_activation(filters, size, batch=1):
    """Elements of the largest feature map of one step (level 1 at full size, then halved per level)."""
    return max(int(batch) * (max(1, int(size) // 2**level) ** 3) * int(width) for level, width in enumerate(filters))


def check_encoder_fits(filters, size, batch=1, in_channels=1, option="--filters", available=None):
    """Refuse an encoder whose weights plus one activation tensor already exceed this machine's memory."""
    filters = [int(f) for f in filters]
    available = machine_memory() if available is None else available
    params = encoder_parameters(filters, in_channels)
    weights = params * FLOAT_BYTES
    activation = largest_activation(filters, size, batch) * FLOAT_BYTES
    if available and weights + activation > available:
        widths = ",".join(map(str, filters))
        raise ConfigError(f"{option} {widths} at --size {size} (batch {batch}) needs at least {_size(weights + activation)} "
                          f"({params:.3g} parameters: {_size(weights)}; largest feature map: {_size(activation)}), "
                          f"more than this machine's {_size(available)} of memory: check {option} and --size for a typo")


def cache_warning(size, channels=None):
    """A warning when each subject's cache (float32, size^3 per channel) takes a GiB or more per channel."""
    per_channel = int(size) ** 3 * FLOAT_BYTES
    if per_channel < CACHE_WARNING_BYTES:
        return None
    total = f" ({_size(per_channel * channels)} for {channels} channels)" if channels else ""
    return (f"--size {size}: every subject takes {_size(per_channel)} per channel{total} in the cache on disk and "
            "in memory while it is read; 128 is the paper's size")


def _size(n):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
