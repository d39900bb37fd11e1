"""Converting timm's tf_efficientnetv2_* checkpoints: mapping, files, recipes, and numeric parity.

The parity tests create each timm model with random weights (nothing is downloaded), convert it, and
compare logits on the same input. They need the optional `timm` extra (torch, timm) and skip without
it. Random weights are made informative first: BatchNorm scales and shifts are drawn at random and
the running statistics measured on a random batch, so every BatchNorm matters, and the classifier is
scaled to logits of a few units, like a trained model's. The negative controls show that a single
BatchNorm epsilon, PyTorch padding, or PyTorch's epsilon move the logits past the tolerance.
"""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import keras

import efficientnetv2_keras as ev2
from efficientnetv2_keras.hparams import ConfigError, load_config
from efficientnetv2_keras.models.builder import block_letters
from efficientnetv2_keras.models.family import FUSED_MBCONV
from efficientnetv2_keras.weights import (
    TIMM_CHECKPOINTS,
    ConversionError,
    apply_weights_info,
    convert_timm,
    find_timm_checkpoint,
    read_weights_info,
    weights_info_path,
)
from efficientnetv2_keras.weights.timm_convert import _metadata, name_from_text

from conftest import TINY_SPEC

TOLERANCE = 1e-3  # max |logit difference| in float32 (the logits are of order 10)
VARIANCE_SCALE = 0.02
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------------------------
# Without torch: names, the mapping's plumbing on a tiny table, files and recipes.
# ------------------------------------------------------------------------------------------------


def _timm_state_from_keras(model, spec):
    """The inverse of the converter, written independently: our weights under timm's names and layouts."""
    state = {}

    def put(theirs, layer_name, kind):
        weights = [keras.ops.convert_to_numpy(w) for w in model.get_layer(layer_name).weights]
        if kind == "bn":
            for field, value in zip(("weight", "bias", "running_mean", "running_var"), weights):
                state[f"{theirs}.{field}"] = value
            state[f"{theirs}.num_batches_tracked"] = np.array(0, dtype=np.int64)
        elif kind == "depthwise":
            state[theirs + ".weight"] = weights[0].transpose(2, 3, 0, 1)
        elif kind == "dense":
            state[theirs + ".weight"], state[theirs + ".bias"] = weights[0].T, weights[1]
        else:
            state[theirs + ".weight"] = weights[0].transpose(3, 2, 0, 1)
            if len(weights) == 2:
                state[theirs + ".bias"] = weights[1]

    put("conv_stem", "stem_conv", "conv")
    put("bn1", "stem_bn", "bn")
    for s, stage in enumerate(spec.scaled_stages()):
        for i in range(stage.repeats):
            ours, theirs = f"block{s + 1}{block_letters(i)}_", f"blocks.{s}.{i}."
            if stage.block == FUSED_MBCONV and stage.expand_ratio == 1:
                put(theirs + "conv", ours + "project_conv", "conv")
                put(theirs + "bn1", ours + "project_bn", "bn")
                continue
            if stage.block == FUSED_MBCONV:
                put(theirs + "conv_exp", ours + "expand_conv", "conv")
                put(theirs + "bn1", ours + "expand_bn", "bn")
                put(theirs + "bn2", ours + "project_bn", "bn")
            else:
                put(theirs + "conv_pw", ours + "expand_conv", "conv")
                put(theirs + "bn1", ours + "expand_bn", "bn")
                put(theirs + "conv_dw", ours + "dwconv2", "depthwise")
                put(theirs + "bn2", ours + "bn", "bn")
                put(theirs + "bn3", ours + "project_bn", "bn")
            if stage.se_ratio:
                put(theirs + "se.conv_reduce", ours + "se_reduce", "conv")
                put(theirs + "se.conv_expand", ours + "se_expand", "conv")
            put(theirs + "conv_pwl", ours + "project_conv", "conv")
    put("conv_head", "top_conv", "conv")
    put("bn2", "top_bn", "bn")
    put("classifier", "predictions", "dense")
    return state


def _randomized_keras(spec, classes, seed=0):
    model = ev2.build_model(spec, classes=classes, classifier_activation=None, include_preprocessing=False)
    rng = np.random.default_rng(seed)
    for w in model.weights:  # includes BatchNorm's moving statistics
        value = rng.uniform(0.5, 1.5, w.shape) if "variance" in w.path else rng.normal(0, 0.3, w.shape)
        w.assign(value.astype("float32"))
    return model


@pytest.fixture(scope="module")
def tiny_converted(tmp_path_factory):
    """A tiny-table model, its weights under timm's names, converted without torch."""
    source = _randomized_keras(TINY_SPEC, classes=5)
    state = _timm_state_from_keras(source, TINY_SPEC)
    path = str(tmp_path_factory.mktemp("tiny") / "tiny.weights.h5")
    info = convert_timm(state, path, variant=TINY_SPEC, verify=False)
    return source, state, path, info


def _images(n, size, seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def test_converted_tiny_model_reproduces_its_source(tiny_converted):
    source, _, path, info = tiny_converted
    normalized = _images(2, 40) / 128.0 - 1.0
    restored = ev2.build_model(TINY_SPEC, classes=5, weights=path, classifier_activation=None,
                               include_preprocessing=False)
    np.testing.assert_allclose(restored(normalized), source(normalized), rtol=1e-5, atol=1e-5)
    # The default model (preprocessing inside, softmax) takes the same file.
    ev2.build_model(TINY_SPEC, classes=5, weights=path)
    # A backbone: the head is skipped. Another class count: skip_head, as for any weights file.
    backbone = ev2.build_model(TINY_SPEC, include_top=False, weights=path)
    np.testing.assert_array_equal(backbone.get_layer("top_conv").kernel, source.get_layer("top_conv").kernel)
    other = ev2.build_model(TINY_SPEC, classes=3)
    ev2.load_weights(other, path, spec=TINY_SPEC, skip_head=True)
    np.testing.assert_array_equal(other.get_layer("block3b_dwconv2").kernel, source.get_layer("block3b_dwconv2").kernel)

    assert info == {**read_weights_info(path), "weights_path": os.path.abspath(path)}
    assert info["classes"] == 5 and info["tag"] is None and info["check"] == {"verified": False}
    assert info["input_normalization"] == "symmetric" and info["weights_file"] == "tiny.weights.h5"
    assert os.path.exists(weights_info_path(path)) and weights_info_path(path).endswith("tiny.json")


def test_conversion_errors_write_nothing(tiny_converted, tmp_path):
    _, state, path, _ = tiny_converted
    before = open(path, "rb").read()
    with pytest.raises(FileExistsError, match="overwrite"):
        convert_timm(state, path, variant=TINY_SPEC, verify=False)
    assert open(path, "rb").read() == before

    target = str(tmp_path / "x.weights.h5")
    missing = {k: v for k, v in state.items() if k != "blocks.2.1.se.conv_reduce.bias"}
    with pytest.raises(ConversionError, match=r"missing \['blocks.2.1.se.conv_reduce.bias'\]"):
        convert_timm(missing, target, variant=TINY_SPEC, verify=False)
    extra = {**state, "blocks.2.2.conv_pw.weight": np.zeros((1, 1, 1, 1), "float32")}
    with pytest.raises(ConversionError, match="unused"):
        convert_timm(extra, target, variant=TINY_SPEC, verify=False)
    squeezed = {**state, "blocks.2.0.se.conv_reduce.weight": np.zeros((2, 32, 1, 1), "float32"),
                "blocks.2.0.se.conv_reduce.bias": np.zeros((2,), "float32")}
    with pytest.raises(ConversionError, match="block3a_se_reduce"):  # SE width of another rule
        convert_timm(squeezed, target, variant=TINY_SPEC, verify=False)
    with pytest.raises(ConversionError, match="not an EfficientNetV2 checkpoint"):
        convert_timm(state, target, verify=False)  # the tiny table is no variant
    with pytest.raises(ValueError, match="output must end in .weights.h5"):
        convert_timm(state, str(tmp_path / "x.h5"), variant=TINY_SPEC, verify=False)
    assert sorted(os.listdir(tmp_path)) == []


def test_checkpoint_names():
    assert len(TIMM_CHECKPOINTS) == 17
    assert all(c.classes == 21843 for c in TIMM_CHECKPOINTS.values() if c.tag == "in21k")
    assert "tf_efficientnetv2_xl.in1k" not in TIMM_CHECKPOINTS  # XL was only released with 21k pretraining
    hub = "/cache/models--timm--tf_efficientnetv2_s.in21k_ft_in1k/snapshots/abc/model.safetensors"
    assert name_from_text(hub) == "tf_efficientnetv2_s.in21k_ft_in1k"
    assert name_from_text("tf_efficientnetv2_xl_in21ft1k-06c35c48.pth") == "tf_efficientnetv2_xl.in21k_ft_in1k"
    assert name_from_text("tf_efficientnetv2_m_21k-361418a2.pth") == "tf_efficientnetv2_m.in21k"
    assert name_from_text("tf_efficientnetv2_l-d664b728.pth") == "tf_efficientnetv2_l"
    assert name_from_text("model.safetensors") is None
    with pytest.raises(ValueError, match="PyTorch padding"):
        find_timm_checkpoint("efficientnetv2_rw_s.ra2_in1k")
    with pytest.raises(ValueError, match="no checkpoint 'tf_efficientnetv2_xl.in1k'"):
        find_timm_checkpoint("tf_efficientnetv2_xl.in1k")
    with pytest.raises(ConversionError, match="with its tag: one of tf_efficientnetv2_m.in1k"):
        convert_timm("tf_efficientnetv2_m", "unused")  # timm would pick a default tag silently
    with pytest.raises(FileNotFoundError, match="not found"):
        convert_timm("missing/model.safetensors", "unused")
    # B3's 1k checkpoints were trained on differently normalized inputs: the name must be given.
    b3 = ev2.get_model_spec("b3")
    with pytest.raises(ConversionError, match="tf_efficientnetv2_b3.in21k_ft_in1k"):
        _metadata(b3, None, 1000)
    assert _metadata(b3, None, 21843)["input_normalization"] == "symmetric"
    assert _metadata(b3, "tf_efficientnetv2_b3.in1k", 1000)["input_normalization"] == "imagenet"
    s = _metadata(ev2.get_model_spec("s"), None, 21843)
    assert (s["tag"], s["train_size"], s["eval_size"], s["crop_pct"]) == ("in21k", 300, 384, 1.0)
    with pytest.raises(ConversionError, match="21843 classes"):
        _metadata(ev2.get_model_spec("s"), "tf_efficientnetv2_s.in21k", 1000)


def _write_info(path, **changes):
    with open(weights_info_path(path), encoding="utf-8") as f:
        info = json.load(f)
    info.update(changes)
    with open(weights_info_path(path), "w", encoding="utf-8") as f:
        json.dump(info, f)


def test_input_normalization_follows_the_weights(tiny_converted, tmp_path):
    _, state, _, _ = tiny_converted
    path = str(tmp_path / "b3like.weights.h5")
    convert_timm(state, path, variant=TINY_SPEC, verify=False)
    # As timm's B3 21k weights: a variant normalized with ImageNet mean/std, weights trained on (x-128)/128.
    imagenet_spec = dataclasses.replace(TINY_SPEC, input_normalization="imagenet")
    with pytest.raises(ev2.WeightsMismatchError, match="input_normalization='symmetric'"):
        ev2.build_model(imagenet_spec, classes=5, weights=path)
    model = ev2.build_model(imagenet_spec, classes=5, weights=path, input_normalization="symmetric")
    assert "normalization" not in [layer.name for layer in model.layers]
    ev2.build_model(imagenet_spec, classes=5, weights=path, include_preprocessing=False)
    _write_info(path, input_normalization="imagenet")
    ev2.build_model(imagenet_spec, classes=5, weights=path)
    with pytest.raises(ValueError, match="input_normalization must be one of"):
        ev2.build_model(TINY_SPEC, input_normalization="inception")


def test_recipe_follows_the_converted_checkpoint(tiny_converted, tmp_path):
    _, state, _, _ = tiny_converted
    path = str(tmp_path / "s21k.weights.h5")
    convert_timm(state, path, variant=TINY_SPEC, verify=False)
    _write_info(path, variant="efficientnetv2-b3", input_normalization="symmetric", train_size=240,
                eval_size=300, crop_pct=0.9)
    config = load_config("finetune_imagenet", overrides=[f"model.init_checkpoint={path}", "model.name=b3"])
    applied = apply_weights_info(config)
    assert applied.model.input_normalization == "symmetric"
    assert (applied.data.eval_size, applied.data.eval_crop_padding, applied.data.train_size) == (300, 33, "eval")
    assert config.model.input_normalization is None  # the recipe passed in is left as it was
    with pytest.raises(ConfigError, match="set model.name=efficientnetv2-b3"):
        apply_weights_info(load_config("finetune_imagenet", overrides=[f"model.init_checkpoint={path}"]))
    # Values the recipe sets win; checkpoints without a JSON change nothing.
    kept = apply_weights_info(load_config("finetune_imagenet", overrides=[
        f"model.init_checkpoint={path}", "model.name=b3", "data.eval_size=224", "model.input_normalization=imagenet"]))
    assert (kept.data.eval_size, kept.model.input_normalization) == (224, "imagenet")
    os.remove(weights_info_path(path))
    assert apply_weights_info(config) is config


def test_21k_finetune_recipe_loads():
    config = load_config("finetune_imagenet_from_21k")
    assert config.model.name == "efficientnetv2-s" and config.model.skip_head
    assert config.model.init_checkpoint.endswith("tf_efficientnetv2_s.in21k.weights.h5")


# ------------------------------------------------------------------------------------------------
# With torch and timm: numeric parity with timm's models.
# ------------------------------------------------------------------------------------------------

_TORCHVISION_OPS = []  # keeps the operator definitions below alive


def _import_timm():
    torch = pytest.importorskip("torch", reason="parity with timm needs the optional extra: pip install -e '.[timm]'")
    try:
        import torchvision  # noqa: F401
    except RuntimeError as error:
        # PyPI's Linux torchvision is a CUDA build; beside a CPU-only torch its C++ operators do not
        # load and its import fails registering "torchvision::nms". timm imports torchvision but its
        # EfficientNet uses none of those operators: declaring the two schemas lets the import finish.
        if "torchvision::" not in str(error):
            raise
        library = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _TORCHVISION_OPS.append(library)
    timm = pytest.importorskip("timm", reason="parity with timm needs the optional extra: pip install -e '.[timm]'")
    return timm, torch


def _random_timm(variant, seed=0, **kwargs):
    """timm's model with informative random weights (see the module docstring)."""
    timm, torch = _import_timm()
    torch.manual_seed(seed)
    model = timm.create_model(ev2.weights.timm_architecture(variant), pretrained=False, **kwargs)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in norms:
            bn.weight.uniform_(0.8, 1.2, generator=generator)
            bn.bias.normal_(0.0, 0.1, generator=generator)
            bn.reset_running_stats()
            bn.momentum = None  # a cumulative average: the statistics of the batch below
        model.train()
        model(torch.randn(8, 3, 96, 96, generator=generator))
        model.eval()
        for bn in norms:  # small variances, as in trained networks, make every epsilon count
            bn.running_var.mul_(VARIANCE_SCALE)
            bn.weight.mul_(VARIANCE_SCALE**0.5)
        logits = model(torch.randn(4, 3, 96, 96, generator=generator))
        model.classifier.weight.mul_(3.0 / logits.std())
        model.classifier.bias.zero_()
    return model


def _timm_logits(model, images):
    _, torch = _import_timm()
    with torch.no_grad():
        return model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()


def _max_difference(ours, theirs, images):
    return float(np.max(np.abs(keras.ops.convert_to_numpy(ours(images, training=False)) - _timm_logits(theirs, images))))


@pytest.fixture(scope="module")
def b0_via_tool(tmp_path_factory):
    """timm B0 saved as .safetensors, converted by tools/convert_weights.py, loaded by our builder."""
    _import_timm()
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("b0")
    reference = _random_timm("b0")
    checkpoint = str(folder / "model.safetensors")
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, checkpoint)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "convert_weights.py"), f"--source={checkpoint}",
         "--name=tf_efficientnetv2_b0", f"--output={folder}", "--verify=false"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    path = str(folder / "tf_efficientnetv2_b0.weights.h5")
    ours = ev2.EfficientNetV2B0(weights=path, include_preprocessing=False, classifier_activation=None)
    return reference, ours, path


def test_b0_parity_with_timm(b0_via_tool):
    reference, ours, path = b0_via_tool
    for size in (64, 71):  # even sizes pad stride-2 convolutions asymmetrically, odd ones symmetrically
        assert _max_difference(ours, reference, _images(2, size) / 64.0 - 2.0) < TOLERANCE
    info = read_weights_info(path)
    assert (info["variant"], info["timm_name"], info["classes"], info["input_normalization"]) == (
        "efficientnetv2-b0", "tf_efficientnetv2_b0", 1000, "imagenet")
    assert (info["eval_size"], info["crop_pct"]) == (224, 0.875)


def test_parity_fails_for_a_wrong_detail(b0_via_tool):
    reference, ours, _ = b0_via_tool
    timm, _ = _import_timm()
    images = np.random.default_rng(3).standard_normal((2, 64, 64, 3)).astype("float32")
    logits = keras.ops.convert_to_numpy(ours(images, training=False))
    assert np.max(np.abs(logits - _timm_logits(reference, images))) < TOLERANCE
    for kwargs in ({"bn_eps": 1e-5}, {"pad_type": ""}):  # PyTorch's BatchNorm epsilon; PyTorch padding
        other = timm.create_model("tf_efficientnetv2_b0", pretrained=False, **kwargs)
        other.load_state_dict(reference.state_dict())
        other.eval()
        assert np.max(np.abs(logits - _timm_logits(other, images))) > TOLERANCE, kwargs
    for layer_name in ("block4b_bn", "top_bn"):  # one BatchNorm epsilon of ours
        layer = ours.get_layer(layer_name)
        layer.epsilon = 1e-5
        try:
            assert _max_difference(ours, reference, images) > TOLERANCE, layer_name
        finally:
            layer.epsilon = 1e-3


def test_converter_refuses_a_failed_check(b0_via_tool, tmp_path):
    reference, _, _ = b0_via_tool
    with pytest.raises(ConversionError, match="nothing was written"):
        convert_timm(reference, str(tmp_path / "strict.weights.h5"), verify=True, tolerance=1e-9)
    assert os.listdir(tmp_path) == []


def _parity_by_converter(variant, tmp_path):
    reference = _random_timm(variant)
    # B3's two 1000-class checkpoints differ in input normalization: the tag must be named.
    name = "tf_efficientnetv2_b3.in1k" if variant == "b3" else None
    info = convert_timm(reference, str(tmp_path), name=name, verify=True)
    check = info["check"]
    assert check["verified"] and check["max_abs_logit_difference"] < TOLERANCE, check
    assert check["max_abs_logit"] > 3.0  # informative logits, not near-zero ones
    return info


def test_s_parity_with_timm(tmp_path):
    info = _parity_by_converter("s", tmp_path)
    assert info["weights_file"] == "tf_efficientnetv2_s.weights.h5"


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["b1", "b2", "b3", "m", "l", "xl"])
def test_parity_with_timm_all_variants(variant, tmp_path):
    _parity_by_converter(variant, tmp_path)
