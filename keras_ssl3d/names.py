"""Every name a user chooses from, and the paper's defaults, in one module without Keras (the CLI's
choices read it without starting a backend; the library modules read it too, so nothing is copied).

Adding a pretext task is its file in ``keras_ssl3d/tasks/`` and one line in `TASKS` (+ its tests).
"""

# The pretext tasks: CLI name -> "module:Class" (imported by ``keras_ssl3d.tasks.TASKS``).
TASKS = {
    "cpc": "keras_ssl3d.tasks.cpc:CPC",
    "rpl": "keras_ssl3d.tasks.rpl:RPL",
    "jigsaw": "keras_ssl3d.tasks.jigsaw:Jigsaw",
    "rotation": "keras_ssl3d.tasks.rotation:Rotation",
    "exemplar": "keras_ssl3d.tasks.exemplar:Exemplar",
    "genesis": "keras_ssl3d.tasks.genesis:Genesis",
    "mae": "keras_ssl3d.tasks.mae:MAE",
    "simclr": "keras_ssl3d.tasks.simclr:SimCLR",
}
TASK_NAMES = tuple(TASKS)

FINETUNE_STRATEGIES = ("frozen", "warmup", "full")  # keras_ssl3d.finetune.warmup
WARMUP_FREEZES = ("encoder", "pretrained")  # keras_ssl3d.finetune.warmup: what a warm-up (or frozen) keeps frozen
# --decoder: "auto" keeps the decoder of a U-Net preset (Genesis, MAE), "fresh" starts a new one on its encoder
FINETUNE_DECODERS = ("auto", "fresh")  # keras_ssl3d.finetune.model
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")  # keras_ssl3d.training.precision
NORMALIZATIONS = ("batch", "group", "instance", "none")  # keras_ssl3d.layers.normalization
AUGMENTATIONS = ("none", "flip", "flip_intensity")  # keras_ssl3d.finetune.augment
CHANNEL_ADAPTATIONS = ("duplicate", "mean", "random", "by_name")  # keras_ssl3d.presets.adapt
DISTRIBUTION_STRATEGIES = ("auto", "none", "mirrored", "multi-worker")  # keras_ssl3d.distribute

# The paper's defaults (Taleb et al. 2020, appendix), by encoder rank or downstream task.
PRETEXT_LEARNING_RATE = {3: 1e-3, 2: 5e-4}  # Adam
PRETEXT_INPUT_SIZE = {3: 128, 2: 224}
PRETEXT_BATCH_SIZE = {3: 2, 2: 16}  # (not in the paper: what fits one 8 GB GPU at these sizes)
FINETUNE_LEARNING_RATE = {"segmentation": 1e-5, "classification": 5e-5}
FINETUNE_WARMUP_EPOCHS = {"segmentation": 25, "classification": 5}
FINETUNE_INPUT_SIZE = {"segmentation": 128, "classification": 224}
FILTERS_3D = (32, 64, 128, 256, 512)
BLOCKS_2D = (6, 12, 24, 16)
