"""``keras-ssl3d demo``: the whole job on built-in synthetic data (``runner``: data, pretraining, then the
library's study), and the bundled ``demo-brats-*`` presets it can start from (``bundled``,
``python -m keras_ssl3d.demo.bundled``); its report (``report``) is the study's summary with what ran."""

from keras_ssl3d.demo.report import format_summary
from keras_ssl3d.demo.runner import DEFAULT_TASK, MARKER, DemoConfig, default_config, quick_config, run_demo, tiny_config

__all__ = ["DEFAULT_TASK", "MARKER", "DemoConfig", "default_config", "format_summary", "quick_config", "run_demo",
           "tiny_config"]
