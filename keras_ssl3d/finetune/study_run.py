"""One run of a study: fine-tune, score on the study's held-out test subjects, write ``result.json``.

Kept apart from `keras_ssl3d.finetune.study` so that a run's own process (`keras_ssl3d.finetune.study_pool`)
imports only what one run needs.
"""

import time

from keras_ssl3d.fileio import write_json_atomic


def train_study_run(data, settings, run_dir, verbose=0, workers=1, plan=None):
    """Train and score one run of a study, then write its ``result.json`` (in the study's process or a pool's)."""
    from keras_ssl3d.finetune.runner import RESULT_FILE

    start = time.perf_counter()
    result, _, _, scores = finetune_and_score(data, settings, run_dir, data, subjects="test",
                                              resume=(run_dir / "run.json").is_file(), verbose=verbose,
                                              workers=workers, plan=plan)
    result["evaluation"] = _strip(scores)
    result["wall_s"] = time.perf_counter() - start
    write_json_atomic(run_dir / RESULT_FILE, result)
    return result


def finetune_and_score(data, settings, run_dir, test_data, subjects="all", **run_options):
    """One fine-tuning run on ``data`` (`run_finetune`, ``run_options`` passed on) and the scores of the
    model it saved on ``test_data`` (``subjects="test"``: the held-out test subjects of a study's data).
    Returns ``(result, model, metadata, scores)``."""
    from keras_ssl3d.finetune.evaluation import evaluate_model, load_finetuned
    from keras_ssl3d.finetune.runner import run_finetune

    result = run_finetune(data, settings, run_dir, **run_options)
    model, metadata = load_finetuned(run_dir)
    return result, model, metadata, evaluate_model(model, metadata, test_data, subjects=subjects)


def _strip(scores):
    if scores is None:
        return None
    return {k: v for k, v in scores.items() if k != "per_subject"}
