"""The pretext tasks' names, importable without Keras: the CLI's ``--task`` choices must not start
TensorFlow. ``keras_ssl3d.tasks.TASKS`` maps each of them to its class (a test keeps both in step)."""

TASK_NAMES = ("cpc", "rpl", "jigsaw", "rotation", "exemplar", "genesis", "mae", "simclr")
