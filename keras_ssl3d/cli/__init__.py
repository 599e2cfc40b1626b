"""The ``keras-ssl3d`` command line."""
