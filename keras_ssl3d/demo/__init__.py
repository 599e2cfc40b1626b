"""``keras-ssl3d demo``: the whole job on built-in synthetic data (``runner``), and the bundled
``demo-brats-*`` presets it can start from (``bundled``, ``python -m keras_ssl3d.demo.bundled``); its report
(``report``) is drawn with the study's figure and statistics."""

from keras_ssl3d.demo.report import REGIONS, format_table
from keras_ssl3d.demo.runner import DEFAULT_TASK, MARKER, DemoConfig, default_config, quick_config, run_demo, tiny_config

__all__ = ["DEFAULT_TASK", "MARKER", "REGIONS", "DemoConfig", "default_config", "format_table", "quick_config",
           "run_demo", "tiny_config"]
