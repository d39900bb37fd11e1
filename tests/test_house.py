"""The package's layout: modules with one job, short functions, layers that import only downward, the
model constructors documented like keras.applications', and no side effect of importing the models."""

import ast
import inspect
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "efficientnetv2_keras")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60  # docstrings count
# Each subpackage (or top-level module) by layer: a module imports its own subpackage or a lower layer, never
# a sibling of its layer or a higher one. `limits` and `files` are at the bottom; the commands at the top.
LAYERS = {
    "limits": 0, "files": 0, "messages": 0,
    "models": 1,
    "data": 2, "hparams": 2,  # the input pipeline does not read the recipe schema, nor the schema the pipeline
    "weights": 3, "progressive": 3,
    "training": 4,
    "export": 5, "nas": 5, "predict": 5, "runs": 5,
    "benchmarks": 6,
    "cli": 7,
}  # fmt: skip


def _python_files(*folders):
    for folder in folders:
        for directory, _, files in os.walk(folder):
            yield from (os.path.join(directory, f) for f in sorted(files) if f.endswith(".py"))


def test_modules_stay_under_400_lines_and_functions_under_60():
    too_long = []
    for path in _python_files(PACKAGE, os.path.join(ROOT, "tools")):
        source = open(path, encoding="utf-8").read()
        where = os.path.relpath(path, ROOT)
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{where}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{where}:{node.lineno} {node.name}: {length} lines")
    assert too_long == []


def _layer(module):
    parts = module.split(".")
    return parts[1] if parts[0] == "efficientnetv2_keras" and len(parts) > 1 else None


def _imported_modules(tree):
    """Every module an import statement names, lazy imports inside functions included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield node.lineno, [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.lineno, [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]


def test_each_layer_imports_only_the_layers_below_it():
    upward = []
    for path in _python_files(PACKAGE):
        module = os.path.relpath(path[:-3], ROOT).replace(os.sep, ".").removesuffix(".__init__")
        own = _layer(module)
        if own is None:
            continue
        for line, names in _imported_modules(ast.parse(open(path, encoding="utf-8").read())):
            for name in names:
                other = _layer(name)
                if other in LAYERS and other != own and LAYERS[other] >= LAYERS[own]:
                    upward.append(f"{os.path.relpath(path, ROOT)}:{line} ({own}) imports {name} ({other})")
    assert sorted(set(upward)) == []


def test_the_constructors_document_every_argument_as_keras_applications_does():
    from efficientnetv2_keras import models

    arguments = list(inspect.signature(models.build_model).parameters)[1:]  # all but model_name
    for variant in models.VARIANTS:
        constructor = getattr(models, models.KERAS_APPLICATIONS.get(variant, "EfficientNetV2XL"))
        assert list(inspect.signature(constructor).parameters) == arguments, constructor.__name__
        documented = [line.split(":")[0].strip() for line in constructor.__doc__.splitlines()
                      if line.startswith("    ") and not line.startswith("     ") and ":" in line]
        assert documented == arguments, constructor.__name__
        spec = models.get_model_spec(variant)
        assert f"at {spec.train_size} px" in constructor.__doc__ and f"at {spec.eval_size} px" in constructor.__doc__
        assert f'Defaults to `"{spec.name}"`' in constructor.__doc__


def test_a_constructor_passes_every_argument_on():
    from efficientnetv2_keras import models

    model = models.EfficientNetV2B0(include_top=False, pooling="max", input_shape=(32, 32, 3), name="b0_features",
                                    survival_prob=1.0, bn_momentum=0.5, activation="relu",
                                    input_normalization="symmetric")
    assert model.name == "b0_features" and model.output_shape == (None, 1280)
    assert model.get_layer("stem_bn").momentum == 0.5 and model.get_layer("top_activation").activation.__name__ == "relu"
    assert model.get_layer("rescaling").offset == -1  # symmetric, not B0's ImageNet mean/std
    assert not [layer for layer in model.layers if "drop" in layer.name and getattr(layer, "rate", 0) > 0]


def test_importing_the_models_leaves_the_recursion_limit_alone():
    code = "import sys; import efficientnetv2_keras.models; print(sys.getrecursionlimit())"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert run.stdout.split() == ["1000"]  # Python's default


@pytest.fixture
def default_recursion_limit():
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)  # Python's default, as in a fresh process
    yield
    sys.setrecursionlimit(limit)


def test_models_deeper_than_the_default_recursion_limit_build_and_load(default_recursion_limit):
    import keras

    from efficientnetv2_keras.models import build_model
    from efficientnetv2_keras.models.family import FUSED_MBCONV, ModelSpec, StageSpec

    # About 1,000 layers in a row: deeper than Keras can connect with Python's default recursion limit.
    spec = ModelSpec("efficientnetv2-deep", (StageSpec(FUSED_MBCONV, 3, 1, 1, 8, 8, 200),), head_filters=8)
    config = build_model(spec, classes=2).get_config()
    sys.setrecursionlimit(1000)  # a process that only loads a .keras file: the same deserialization
    assert len(keras.Model.from_config(config).layers) > 1000


@pytest.mark.parametrize("module", ["efficientnetv2_keras.benchmarks.data", "efficientnetv2_keras.benchmarks.export"])
def test_benchmark_sections_are_a_library_without_the_command(module):
    source = open(os.path.join(ROOT, *module.split(".")) + ".py", encoding="utf-8").read()
    assert "efficientnetv2_keras.cli" not in source and "absl import flags" not in source


# ------------------------------------------------------------------------------------------------
# The recipe read in one place: following `config` from the trainer's entry point.
# ------------------------------------------------------------------------------------------------

MAX_CONFIG_STOPS = 15  # functions that receive the whole recipe, train_and_evaluate included
MAX_STOPS_PER_FILE = 3  # a file is entered once and returned to at most twice


def _package_index(package):
    """{module: (path, {function name: FunctionDef}, {local name: imported "module" or "module.name"})}."""
    index = {}
    for path in _python_files(package):
        module = os.path.relpath(path[:-3], os.path.dirname(package)).replace(os.sep, ".").removesuffix(".__init__")
        tree = ast.parse(open(path, encoding="utf-8").read())
        functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
        imported = {}
        for node in ast.walk(tree):  # lazy imports inside functions included
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.update({alias.asname or alias.name: f"{node.module}.{alias.name}" for alias in node.names})
            elif isinstance(node, ast.Import):
                imported.update({alias.asname or alias.name: alias.name for alias in node.names})
        index[module] = (path, functions, imported)
    return index


def _resolve(index, module, call):
    """(module, FunctionDef) of a package function that `call` calls by name or as `module_alias.name`."""
    if isinstance(call.func, ast.Name):
        name, target = call.func.id, None
        if name in index[module][1]:
            return module, index[module][1][name]
        target = index[module][2].get(name)
    elif isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name):
        imported = index[module][2].get(call.func.value.id)
        target = f"{imported}.{call.func.attr}" if imported else None
    else:
        return None
    for _ in range(5):  # through re-exports (a package's __init__, a module that imports the name)
        if target is None or "." not in target:
            return None
        owner, name = target.rsplit(".", 1)
        if owner not in index:
            return None
        if name in index[owner][1]:
            return owner, index[owner][1][name]
        target = index[owner][2].get(name)
    return None


def _receivers(call, function, tracked):
    """The parameters of `function` that `call` binds to a tracked name (the recipe)."""
    parameters = [a.arg for a in function.args.posonlyargs + function.args.args]
    keywords = parameters + [a.arg for a in function.args.kwonlyargs]
    bound = {parameters[i] for i, arg in enumerate(call.args)
             if i < len(parameters) and isinstance(arg, ast.Name) and arg.id in tracked}
    return bound | {k.arg for k in call.keywords if k.arg in keywords and isinstance(k.value, ast.Name)
                    and k.value.id in tracked}


def follow_the_recipe(package, start=("efficientnetv2_keras.training.trainer", "train_and_evaluate")):
    """Every package function the recipe (`config`) is passed to from `start`, depth first: [(module,
    function name)], and the calls that climb to a higher layer."""
    index = _package_index(package)
    stops, climbs, seen = [], [], set()

    def visit(module, function, tracked):
        if (module, function.name) in seen:
            return
        seen.add((module, function.name))
        stops.append((module, function.name))
        for call in (node for node in ast.walk(function) if isinstance(node, ast.Call)):
            found = _resolve(index, module, call)
            receivers = found and _receivers(call, found[1], tracked)
            if receivers:
                if LAYERS.get(_layer(found[0]), 0) > LAYERS.get(_layer(module), 0):
                    climbs.append(f"{module}.{function.name} -> {found[0]}.{found[1].name}")
                visit(found[0], found[1], receivers)

    visit(start[0], index[start[0]][1][start[1]], {"config"})
    return stops, climbs


def test_the_recipe_is_read_in_one_place():
    stops, climbs = follow_the_recipe(PACKAGE)
    per_file = {}
    for module, _ in stops:
        per_file[module] = per_file.get(module, 0) + 1
    path = " -> ".join(f"{module.split('.', 1)[1]}.{name}" for module, name in stops)
    assert len(stops) <= MAX_CONFIG_STOPS, path
    assert {m: n for m, n in per_file.items() if n > MAX_STOPS_PER_FILE} == {}, path
    assert climbs == []


RESOLVER = ("efficientnetv2_keras.training.recipe", "efficientnetv2_keras.training.recipe_settings",
            "efficientnetv2_keras.training.recipe_data")
ENTRY_POINTS = ("efficientnetv2_keras.training.trainer.train_and_evaluate",
                "efficientnetv2_keras.training.trainer._train_and_evaluate")


def test_below_the_resolver_functions_take_values_not_the_recipe():
    takers = []
    for path in _python_files(os.path.join(PACKAGE, "training"), os.path.join(PACKAGE, "progressive")):
        module = os.path.relpath(path[:-3], ROOT).replace(os.sep, ".").removesuffix(".__init__")
        if module in RESOLVER:
            continue
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.FunctionDef) and node.name != "from_config" and "config" in [
                    a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]:
                takers.append(f"{module}.{node.name}")
    assert [t for t in takers if t not in ENTRY_POINTS] == []
