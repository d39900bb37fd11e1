"""The recipe resolver's data side: the recipe's source, its splits (training, minival, test) and how it
is evaluated, read from the recipe's `data` section (with `training.recipe` and `recipe_settings`, the
only readers of the recipe schema).
"""

from efficientnetv2_keras import hparams
from efficientnetv2_keras.training.recipe_settings import pipeline_options, sizes_of
from efficientnetv2_keras.training.resolved import Evaluation


def source_from_config(config):
    """The recipe's data source (`data.source`, `data.data_dir`, `data.source_options`)."""
    return source_of(config.data)


def source_of(data):
    """`source_from_config` from the recipe's `data` section."""
    from efficientnetv2_keras.data import get_source

    if data.source == "folder:":  # finetune_folder.yaml: the folder comes from the command line
        raise hparams.ConfigError("data.source is 'folder:' without a folder: set data.source=folder:/path/to/images "
                                  "(--override=data.source=folder:/path/to/images).")
    return get_source(data.source, data_dir=data.data_dir, **data.source_options)


def minival_split(config, source):
    """(training split, minival split or None, description) for `data.minival`.

    A count or fraction is carved from data.train_split with `source.hold_out` (seed 0: the same minival
    for every run of a dataset, whatever runtime.seed); a split name is used as it is; null: none.
    """
    return minival_of(config.data, source)


def minival_of(data, source):
    """`minival_split` from the recipe's `data` section."""
    if data.minival is None:
        return data.train_split, None, None
    if isinstance(data.minival, str):
        return data.train_split, data.minival, {"split": data.minival, "examples": source.num_examples(data.minival)}
    train_split, held = source.hold_out(data.train_split, data.minival, seed=0)
    info = {"split": held, "carved_from": data.train_split, "size": data.minival,
            "examples": source.num_examples(held), "train_examples": source.num_examples(train_split)}
    return train_split, held, info


def test_split(config, source):
    """(data.eval_split, None), or (None, why there is none): null, or a split the source lacks with
    data.eval_split_optional. A split the source lacks otherwise: a ConfigError naming the fix."""
    return test_split_of(config.data, source)


def test_split_of(data, source):
    """`test_split` from the recipe's `data` section."""
    from efficientnetv2_keras.data.sources import UnknownSplitError

    split = data.eval_split
    if split is None:
        return None, "data.eval_split is null"
    try:
        source.num_examples(split)
    except UnknownSplitError as error:
        if not data.eval_split_optional:
            raise split_error_of(error, data) from None
        return None, f"{source.name} has no {split!r} split; its splits: {error.available}"
    return split, None


_SPLIT_KEYS = ("train_split", "eval_split", "minival")


def _split_key(data, split):
    """The data.* key whose value names `split` (the whole value, or one part of an 'a+b' split)."""
    for key in _SPLIT_KEYS:
        value = getattr(data, key)
        if isinstance(value, str) and split in [value] + [part.strip() for part in value.split("+")]:
            return key
    return None


def split_error(error, config):
    """A source's `UnknownSplitError` with the recipe override that fixes it (sources know no recipe keys)."""
    return split_error_of(error, config.data)


def split_error_of(error, data):
    """`split_error` from the recipe's `data` section."""
    key = _split_key(data, error.split)
    available = error.available
    missing = [part for part in error.split.split("+") if part.strip() not in available] or [error.split]
    lacks = f"the data has no {' or '.join(repr(part) for part in missing)} split"
    if key == "train_split":
        fix = f"set data.train_split={'train' if 'train' in available else available[0]} ({lacks})"
    elif key == "eval_split":
        fix = f"set data.eval_split to one of {available}, or data.eval_split=null to train without a test split ({lacks})"
    elif key == "minival":
        fix = f"set data.minival to one of {available}, or carve one from the training split with e.g. data.minival=0.1"
    else:
        return error
    return hparams.ConfigError(f"{error} To fix it, {fix}.")


def evaluation_of(config, source, split, no_test_split=None):
    """The recipe's `Evaluation` of `source`: `split` (the test split; None: none, `no_test_split` says why)
    at the eval size, evaluation preprocessing, eval.batch_size."""
    data = config.data
    return Evaluation(source, split, sizes_of(config.model.name, data)[1], config.eval.batch_size,
                      pipeline_options(data, config.runtime.seed), no_test_split)


def resolve_evaluation(config, source=None):
    """The recipe's `Evaluation` of its test split, checked against the source (built when not given)."""
    source = source if source is not None else source_of(config.data)
    return evaluation_of(config, source, *test_split_of(config.data, source))


def eval_dataset(config, source, split=None):
    """`split` (default: the test split, data.eval_split) at the eval size, evaluation preprocessing."""
    return evaluation_of(config, source, config.data.eval_split).dataset(split)


def check_even_batches(strategy, config, source, minival=None, evaluate=True):
    """`training.strategy.check_batches_divide` for a recipe: its training batch, and with `evaluate` the
    test split (data.eval_split) and `minival` at eval.batch_size."""
    from efficientnetv2_keras.training.strategy import check_batches_divide

    splits = [config.data.eval_split, minival] if evaluate else []
    check_batches_divide(strategy, config.train.batch_size, config.eval.batch_size, splits, source.num_examples)
