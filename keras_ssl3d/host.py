"""Facts about this machine that several layers read (the memory budget's checks, the cache's dtype), without
importing Keras: ``preprocess`` and its worker processes stay Keras-free."""

import os


def machine_memory():
    """Bytes of physical memory, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
