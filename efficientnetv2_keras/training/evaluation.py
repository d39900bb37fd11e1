"""Evaluating a run's checkpoints on the test split (data.eval_split), once, each labelled by its role.

`last.keras` is the final model (role "final"); `best.keras` the one selected on the minival (role
"best"). Tools find a run's checkpoint with `find_checkpoint` and evaluate it with `evaluate_model`.
"""

import os

from efficientnetv2_keras.training.run_folder import RunDir
from efficientnetv2_keras.training.callbacks import describe_checkpoint, read_record
from efficientnetv2_keras.training.compiling import compile_model
from efficientnetv2_keras.training.optimizers import weight_decay_loss
from efficientnetv2_keras.training.recipe import compiling_of, resolve_evaluation
from efficientnetv2_keras.training.resolved import Recipe


def find_checkpoint(model_dir):
    """model_dir's best.keras (selected on the minival), else its last.keras (the path of best.keras when
    neither exists). `describe_checkpoint` says which weights the file holds."""
    return RunDir(model_dir).checkpoint()


def nothing_to_evaluate(reason):
    """The error of an evaluation without a test split (reason: `recipe.test_split`'s)."""
    return ValueError(f"Nothing to evaluate: no test split ({reason}). Name one with data.eval_split=SPLIT.")


def _evaluation(recipe, source=None):
    """The `Evaluation` of a resolved `Recipe`, or of a recipe `hparams.Config` (resolved here for it)."""
    return recipe.evaluation if isinstance(recipe, Recipe) else resolve_evaluation(recipe, source)


def _compiling(recipe):
    """(CompileSettings, multi_label) of a resolved `Recipe`, or of a recipe `hparams.Config`."""
    if isinstance(recipe, Recipe):
        return recipe.compile_settings, recipe.multi_label
    return compiling_of(recipe)


def evaluate_model(model, recipe, source=None, checkpoint_name="", role=None):
    """Evaluates a compiled model on the test split (data.eval_split) at the eval size; returns the metrics.

    recipe: a resolved `Recipe`, or a recipe (`hparams.Config`) with its `source` (None: the recipe's).
    checkpoint_name: a label, or the checkpoint's path (then labelled with `describe_checkpoint`).
    role: "final" or "best", for the results table. `loss` is the cross-entropy; `l2_loss` (when the
    recipe has a coupled weight decay) the L2 term of these weights, which is not part of it.
    """
    evaluation = _evaluation(recipe, source)
    if evaluation.split is None:
        raise nothing_to_evaluate(evaluation.no_test_split)
    metrics = model.evaluate(evaluation.dataset(), verbose=0, return_dict=True)
    if checkpoint_name and os.path.exists(checkpoint_name):
        checkpoint_name = describe_checkpoint(checkpoint_name)
    result = {"role": role, "checkpoint": checkpoint_name, "eval_split": evaluation.split,
              "eval_size": evaluation.image_size, **{k: float(v) for k, v in metrics.items()}}
    l2_weight_decay = _compiling(recipe)[0].optimizer.l2_weight_decay
    if l2_weight_decay > 0:
        result["l2_loss"] = weight_decay_loss(model, l2_weight_decay)
    return result


def load_for_evaluation(recipe, checkpoint_path):
    """A saved model (`.keras`), compiled with the recipe's loss and metrics, ready to evaluate.

    recipe: a resolved `Recipe` or a recipe (`hparams.Config`)."""
    if not os.path.exists(checkpoint_path):
        raise FileNotFoundError(
            f"No checkpoint at {checkpoint_path!r}: train first (tools/train.py --mode=train) or pass "
            "--checkpoint=<file.keras>."
        )
    from efficientnetv2_keras.models.io import load_model_file  # names a truncated or foreign file

    model = load_model_file(checkpoint_path, compile=False)
    settings, multi_label = _compiling(recipe)
    compile_model(model, settings, steps_per_epoch=1, total_steps=1, multi_label=multi_label,
                  num_classes=model.output_shape[-1])
    return model


def evaluate_checkpoints(recipe, model_dir, strategy, source=None, final=None):
    """The test split for last.keras (role "final") and best.keras (role "best"), each evaluated once.

    recipe: a resolved `Recipe`, or a recipe (`hparams.Config`) with its `source`.
    final: the final model's metrics when it was evaluated in memory. best.keras is not evaluated again
    when it holds the same epoch as last.keras.
    """
    def evaluate_file(path, role):
        # Imported with the strategy (which the trainer made), so no new import here.
        from efficientnetv2_keras.training.strategy import fit_multi_worker

        with strategy.scope():
            model = load_for_evaluation(recipe, path)
        fit_multi_worker(model, strategy)  # Keras' evaluate needs the same two fixes as fit there
        return evaluate_model(model, recipe, source, path, role=role)

    evaluations = []
    run = RunDir(model_dir)
    last, best = run.last, run.best
    if final is not None:
        evaluations.append({**final, "role": "final", "checkpoint": describe_checkpoint(last)})
    elif os.path.exists(last):
        evaluations.append(evaluate_file(last, "final"))
    if os.path.exists(best):
        best_record, last_record = read_record(best), read_record(last)
        if evaluations and best_record and last_record and best_record.get("epoch") == last_record.get("epoch"):
            evaluations.append({**evaluations[0], "role": "best",
                                "checkpoint": describe_checkpoint(best) + " (the final weights)"})
        else:
            evaluations.append(evaluate_file(best, "best"))
    return evaluations
