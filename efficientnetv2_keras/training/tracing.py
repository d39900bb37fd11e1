"""How many times TensorFlow traced a model's compiled train step (a fixed cost of every run).

Keras 3 (TensorFlow backend) makes `model.train_function` a Python function around two
`tf.function`s: one reading `steps_per_execution` batches from the iterator, one running a step on a
batch. Each trace costs seconds to minutes (B0: ~20 s here, S: ~45 s); a progressive run whose
images are [batch, None, None, 3] traces each once, whatever the stage's batch and image size.
"""


def train_function_traces(model):
    """{"iterator": n, "step": m}: traces of the iterator loop and of the per-batch step, or None.

    None when there is nothing to count: no train function yet, another backend, or a Keras whose
    train function is laid out differently.
    """
    function = getattr(model, "train_function", None)
    closure = getattr(function, "__closure__", None)
    if not closure:
        return None
    cells = dict(zip(function.__code__.co_freevars, (cell.cell_contents for cell in closure)))
    counts = {}
    for key, name in (("iterator", "multi_step_on_iterator"), ("step", "one_step_on_data")):
        traced = cells.get(name)
        if not hasattr(traced, "experimental_get_tracing_count"):  # Keras wraps the step (optionals)
            traced = getattr(traced, "__wrapped__", None)
        count = getattr(traced, "experimental_get_tracing_count", None)
        if count is None:
            return None
        counts[key] = int(count())
    return counts
