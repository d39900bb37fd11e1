"""Training-aware NAS (paper §3.3): the search space, the reward, the resumable search, searched tables
as `model.name` of a recipe."""

import csv
import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest

from efficientnetv2_keras.hparams import ConfigError, load_config
from efficientnetv2_keras.models import build_model
from efficientnetv2_keras.models.family import (
    FUSED_MBCONV,
    MBCONV,
    get_model_spec,
    load_model_spec,
    save_model_spec,
)
from efficientnetv2_keras.nas import (
    BACKBONE,
    PAPER_V,
    PAPER_W,
    SearchError,
    SearchSpace,
    measure_train_step,
    operator_preference,
    read_results,
    reward,
    run_search,
    sample_specs,
    scaled_backbone,
    score_rows,
    table_digest,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Proxy runs on the tiny table: one short epoch at 32 px.
TINY_PROXY = (
    "progressive.enabled=false", "data.source_options.image_size=32", "data.train_size=32", "data.eval_size=32",
    "train.epochs=1", "train.steps_per_epoch=2", "train.batch_size=16", "eval.batch_size=144",
)


@pytest.fixture
def space(tiny_spec):
    return SearchSpace(tiny_spec)


# -- the search space -------------------------------------------------------------------------------


def test_sampling_is_seeded_reproducible_and_stays_in_the_space(space, tiny_spec):
    first, again, other = sample_specs(space, 6, seed=3), sample_specs(space, 6, seed=3), sample_specs(space, 6, seed=4)
    assert first == again
    assert first != other
    assert sample_specs(space, 3, seed=3) == first[:3]  # a longer search starts with the shorter one
    assert len({table_digest(s) for s in first}) == 6  # no duplicates
    for spec in first:
        assert space.contains(spec)
        for stage, base in zip(spec.stages, tiny_spec.stages):
            # Channels and strides are the backbone's (§3.3); the rest is drawn from the choices.
            assert (stage.stride, stage.in_filters, stage.out_filters) == (base.stride, base.in_filters, base.out_filters)
            assert stage.block in (MBCONV, FUSED_MBCONV) and stage.kernel in (3, 5)
            assert stage.expand_ratio in (1, 4, 6) and stage.se_ratio in (0.0, 0.25)
            assert max(1, base.repeats - 1) <= stage.repeats <= base.repeats + 1
        assert (spec.width, spec.depth, spec.head_filters) == (tiny_spec.width, tiny_spec.depth, tiny_spec.head_filters)
    # Over many draws every choice of §3.3 occurs.
    many = sample_specs(space, 40, seed=0)
    stages = [stage for spec in many for stage in spec.stages]
    assert {s.block for s in stages} == {MBCONV, FUSED_MBCONV} and {s.kernel for s in stages} == {3, 5}
    assert {s.expand_ratio for s in stages} == {1, 4, 6} and {s.se_ratio for s in stages} == {0.0, 0.25}
    assert space.size == (2 * 2 * 3 * 2) ** 3 * 2 * 3 * 3  # repeats: {1, 2}, {1, 2, 3}, {1, 2, 3}


def test_search_space_rejects_bad_choices(tiny_spec):
    with pytest.raises(ValueError, match="block types"):
        SearchSpace(tiny_spec, operators=("conv",))
    with pytest.raises(ValueError, match="at least one choice"):
        SearchSpace(tiny_spec, kernels=())


def test_scaled_backbone_holds_the_layers_and_channels_that_are_built():
    spec = scaled_backbone("b0", width=0.25, depth=0.5)
    b0 = get_model_spec("b0")
    assert spec.name == "efficientnetv2-b0-w0.25-d0.5" and (spec.width, spec.depth) == (1.0, 1.0)
    assert [s.repeats for s in spec.stages] == [1, 1, 1, 2, 3, 4]  # ceil(0.5 * (1, 2, 2, 3, 5, 8))
    assert [s.out_filters for s in spec.stages] == [8, 8, 16, 24, 32, 48]  # B0's x 0.25, to multiples of 8
    assert spec.head_filters == 320 and [s.block for s in spec.stages] == [s.block for s in b0.stages]
    same = dataclasses.replace(b0, width=0.25, depth=0.5)
    assert build_model(spec, classes=10).count_params() == build_model(same, classes=10).count_params()


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_sampled_table_round_trips_and_builds_from_its_file(tmp_path, space, suffix):
    spec = sample_specs(space, 1, seed=1)[0]
    path = save_model_spec(spec, str(tmp_path / f"table{suffix}"))
    assert load_model_spec(path) == spec == get_model_spec(path)
    from_file = build_model(path, classes=10, input_shape=(32, 32, 3))
    from_spec = build_model(spec, classes=10, input_shape=(32, 32, 3))
    assert from_file.name == spec.name and from_file.count_params() == from_spec.count_params()


def test_every_sampled_table_builds_and_its_parameter_count_is_the_rewards(tmp_path, space, tiny_spec):
    """P of the reward is `measure_train_step`'s count: that of the model the trainer builds."""
    from efficientnetv2_keras.training.recipe import build_model_from_config

    tables = [tiny_spec] + sample_specs(space, 4, seed=0)
    for index, spec in enumerate(tables):
        path = save_model_spec(spec, str(tmp_path / f"t{index}.yaml"))
        config = load_config("digits_demo", list(TINY_PROXY) + [f"model.name={path}"])
        expected = build_model(path, classes=10).count_params()
        # measure_train_step builds the model with the trainer's builder at the timed image size.
        assert build_model_from_config(config, num_classes=10, input_shape=(32, 32, 3)).count_params() == expected
        if index == 1:  # one timed run (tracing a train step is the slow part)
            measured = measure_train_step(config, 10, steps=2, warmup=1, count_flops=True)
            assert measured["params"] == expected, spec
            assert measured["step_time"] > 0 and len(measured["step_times"]) == 2 and measured["flops"] > 0
            assert measured["clock"] == "process" and measured["image_size"] == 32 and measured["batch_size"] == 16
    # More expansion, more parameters: the counts follow the table.
    wide = dataclasses.replace(tiny_spec, stages=tuple(dataclasses.replace(s, expand_ratio=6) for s in tiny_spec.stages))
    assert build_model(wide, classes=10).count_params() > build_model(tiny_spec, classes=10).count_params()


# -- the reward ---------------------------------------------------------------------------------------


def test_reward_matches_the_formula_on_hand_computed_values():
    assert (PAPER_W, PAPER_V) == (-0.07, -0.05)
    # Twice the step time and twice the parameters: 0.9 * 2**-0.12 = 0.9 * exp(-0.083178) = 0.9 * 0.920188 = 0.828169.
    assert reward(0.9, 0.2, 2_000_000, base_step_time=0.1, base_size=1_000_000) == pytest.approx(0.828169, abs=1e-6)
    # Half the step time, same size: 0.8 * 0.5**-0.07 = 0.8 * 1.049717 = 0.839773.
    assert reward(0.8, 0.05, 10, base_step_time=0.1, base_size=10) == pytest.approx(0.839773, abs=1e-6)
    # The backbone scores its accuracy; other exponents as given.
    assert reward(0.7, 3.0, 5.0, base_step_time=3.0, base_size=5.0) == pytest.approx(0.7)
    assert reward(0.5, 4.0, 9.0, base_step_time=1.0, base_size=1.0, w=-0.5, v=0.5) == pytest.approx(0.5 * 0.5 * 3.0)
    with pytest.raises(ValueError, match="step_time must be a positive number"):
        reward(0.5, 0.0, 1.0, base_step_time=1.0, base_size=1.0)


def test_score_rows_normalizes_to_the_backbone_and_can_use_flops():
    rows = [
        {"sample": BACKBONE, "accuracy": 0.9, "step_time": 0.1, "params": 100, "flops": 1000},
        {"sample": "01-x", "accuracy": 0.9, "step_time": 0.2, "params": 200, "flops": 500},
    ]
    score_rows(rows)
    assert rows[0]["reward"] == pytest.approx(0.9)
    assert rows[1]["reward"] == pytest.approx(0.828169, abs=1e-6)
    score_rows(rows, cost="flops")
    assert rows[1]["reward"] == pytest.approx(0.9 * 2 ** -0.07 * 0.5 ** -0.05)
    with pytest.raises(SearchError, match="backbone"):
        score_rows(rows[1:])


# -- the search loop ----------------------------------------------------------------------------------


class FakeEvaluator:
    """Deterministic stand-in for the proxy training: accuracy and step time from the table."""

    def __init__(self, stop_after=None):
        self.calls, self.stop_after = [], stop_after

    def __call__(self, table_path, recipe, model_dir, **kwargs):
        if self.stop_after is not None and len(self.calls) == self.stop_after:
            raise KeyboardInterrupt  # the search is killed while this model trains
        spec = load_model_spec(table_path)
        self.calls.append(os.path.basename(model_dir))
        fused = sum(s.block == FUSED_MBCONV for s in spec.stages)
        blocks = sum(s.repeats for s in spec.stages)
        return {"name": spec.name, "table": "", "table_file": os.path.abspath(table_path),
                "accuracy": 0.5 + 0.02 * blocks, "step_time": 0.1 + 0.01 * blocks - 0.005 * fused, "step_clock": "process",
                "params": 1000 * blocks + 10 * sum(s.expand_ratio for s in spec.stages), "flops": "",
                "train_wall_s": 1.0, "train_cpu_s": 1.0, "measure_cpu_s": 0.1, "digest": table_digest(spec)}


def _search(space, out, evaluate, **kwargs):
    return run_search(space, str(out), num_samples=kwargs.pop("num_samples", 5), seed=7, evaluate=evaluate,
                      log=lambda *_: None, **kwargs)


def test_a_killed_search_resumes_and_skips_finished_samples(tmp_path, space):
    killed = FakeEvaluator(stop_after=3)  # backbone + 2 samples finish, the third is killed
    with pytest.raises(KeyboardInterrupt):
        _search(space, tmp_path, killed)
    rows = read_results(str(tmp_path / "results.csv"))
    assert [r["sample"] for r in rows] == killed.calls and killed.calls[0] == BACKBONE and len(rows) == 3

    resumed = FakeEvaluator()
    result = _search(space, tmp_path, resumed)
    assert result.finished and len(resumed.calls) == 3  # samples 3, 4, 5 only
    assert not set(resumed.calls) & set(killed.calls)
    samples = [r["sample"] for r in read_results(str(tmp_path / "results.csv"))]
    assert len(samples) == len(set(samples)) == 6

    # The same as an uninterrupted search.
    fresh = _search(space, tmp_path / "fresh", FakeEvaluator())
    assert [r["sample"] for r in result.rows] == [r["sample"] for r in fresh.rows]
    assert [r["reward"] for r in result.rows] == pytest.approx([r["reward"] for r in fresh.rows])
    # Ranked by reward; every file written; the best table is a table file build_model and recipes take.
    assert [r["reward"] for r in result.rows] == sorted((r["reward"] for r in result.rows), reverse=True)
    for name in ("results", "ranking", "pareto", "best_model", "best_recipe", "backbone"):
        assert os.path.getsize(result.files[name]) > 0, name
    best = load_model_spec(result.files["best_model"])
    assert table_digest(best) == result.best["digest"]
    recipe = load_config(result.files["best_recipe"])
    assert recipe.model.name == os.path.abspath(result.files["best_model"])
    assert recipe.train.epochs == load_config("digits_demo").train.epochs  # the full recipe, not the proxy
    ranking = (tmp_path / "ranking.md").read_text()
    assert "| 1 | " + result.best["sample"] in ranking and "Fused-MBConv against MBConv" in ranking
    preference = operator_preference(result.rows)
    assert len(preference) == 3
    assert all(e["fused"]["count"] + e["mbconv"]["count"] == 5 for e in preference)


def test_a_partial_csv_with_a_torn_line_resumes(tmp_path, space):
    first = FakeEvaluator()
    _search(space, tmp_path, first, num_samples=2)
    path = tmp_path / "results.csv"
    lines = path.read_text().splitlines()
    # A kill mid-write: the last sample's line is cut short.
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:15])
    again = FakeEvaluator()
    _search(space, tmp_path, again, num_samples=3)
    assert again.calls == [first.calls[-1], again.calls[-1]] and len(again.calls) == 2
    samples = [r["sample"] for r in read_results(str(path))]
    assert len(samples) == 4 and len(set(samples)) == 4


def test_a_failing_sample_is_logged_and_the_search_goes_on(tmp_path, space):
    class Flaky(FakeEvaluator):
        def __call__(self, table_path, recipe, model_dir, **kwargs):
            if os.path.basename(model_dir).startswith("02-"):
                raise RuntimeError("out of memory")
            return super().__call__(table_path, recipe, model_dir, **kwargs)

    result = _search(space, tmp_path, Flaky(), num_samples=3)
    assert not result.finished and len(result.rows) == 3
    assert "02-" in (tmp_path / "failures.log").read_text() and "out of memory" in (tmp_path / "failures.log").read_text()
    retry = FakeEvaluator()
    assert _search(space, tmp_path, retry, num_samples=3).finished and len(retry.calls) == 1


def test_a_search_refuses_other_settings_in_the_same_folder(tmp_path, space):
    _search(space, tmp_path, FakeEvaluator(), num_samples=1)
    with pytest.raises(SearchError, match="other settings.*seed"):
        run_search(space, str(tmp_path), num_samples=1, seed=8, evaluate=FakeEvaluator(), log=lambda *_: None)


def test_the_time_budget_stops_the_search_and_progress_is_printed(tmp_path, space):
    messages = []
    result = run_search(space, str(tmp_path), num_samples=4, seed=0, time_budget=0, evaluate=FakeEvaluator(),
                        log=messages.append)
    assert not result.finished and result.rows == [] and result.best is None
    assert any("Time budget" in m and "rerun the same command" in m for m in messages)
    messages.clear()
    result = run_search(space, str(tmp_path), num_samples=4, seed=0, evaluate=FakeEvaluator(), log=messages.append)
    assert result.finished
    assert any(m.startswith("[sample 4 of 4]") for m in messages) and any("[backbone]" in m for m in messages)


# -- searched tables in recipes -----------------------------------------------------------------------


def test_model_name_accepts_a_table_file_and_names_a_bad_one(tmp_path, space):
    spec = sample_specs(space, 1, seed=2)[0]
    path = save_model_spec(spec, str(tmp_path / "best_model.yaml"))
    config = load_config("digits_demo", [f"model.name={path}"])
    assert get_model_spec(config.model.name) == spec
    with pytest.raises(ConfigError, match="model.name: model table .*missing.yaml' does not exist"):
        load_config("digits_demo", [f"model.name={tmp_path / 'missing.yaml'}"])
    (tmp_path / "bad.yaml").write_text("name: x\nstages: [\n")
    with pytest.raises(ConfigError, match="bad.yaml' is not valid YAML"):
        load_config("digits_demo", [f"model.name={tmp_path / 'bad.yaml'}"])
    (tmp_path / "bad.json").write_text(json.dumps({"name": "x", "stages": [{"block": "mbconv", "kernal": 3}]}))
    with pytest.raises(ConfigError, match=r"stage 1: unknown key\(s\) \['kernal'\]"):
        load_config("digits_demo", [f"model.name={tmp_path / 'bad.json'}"])
    (tmp_path / "nostages.yaml").write_text("name: x\n")
    with pytest.raises(ConfigError, match=r"missing key\(s\) \['stages'\]"):
        load_config("digits_demo", [f"model.name={tmp_path / 'nostages.yaml'}"])
    row = dict(block="mbconv", kernel=3, stride=1, expand_ratio=0, in_filters=8, out_filters=8, repeats=1)
    (tmp_path / "zero.json").write_text(json.dumps({"name": "x", "stages": [row]}))
    with pytest.raises(ConfigError, match="stage 1: StageSpec.expand_ratio must be a positive integer"):
        load_config("digits_demo", [f"model.name={tmp_path / 'zero.json'}"])


def test_a_sampled_table_trains_through_tools_train(tmp_path, space):
    spec = sample_specs(space, 1, seed=5)[0]
    path = save_model_spec(spec, str(tmp_path / "sampled.yaml"))
    overrides = ",".join(list(TINY_PROXY) + ["data.minival=null", f"model.name={path}"])
    model_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "train.py"), "--hparams=digits_demo", f"--model_dir={model_dir}",
         f"--override={overrides}"],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    results = json.loads((model_dir / "results.json").read_text())
    assert results["model"] == path and 0.0 <= results["evaluations"][0]["accuracy"] <= 1.0
    import keras

    model = keras.models.load_model(str(model_dir / "last.keras"))
    assert model.name == spec.name and model.count_params() == build_model(path, classes=10).count_params()


@pytest.mark.slow
def test_the_real_proxy_search_on_digits(tmp_path, space):
    """The search end to end with the package's trainer (one sample, one short epoch)."""
    result = run_search(space, str(tmp_path), num_samples=1, seed=0, proxy_overrides=TINY_PROXY, timing_steps=2,
                        warmup_steps=1, log=lambda *_: None)
    assert result.finished and len(result.rows) == 2
    rows = {r["sample"]: r for r in result.rows}
    assert rows[BACKBONE]["reward"] == pytest.approx(rows[BACKBONE]["accuracy"])
    for row in rows.values():
        assert 0.0 <= row["accuracy"] <= 1.0 and row["step_time"] > 0
        # A is measured on the held-out part of the training split, never on the test split.
        results = json.loads(open(os.path.join(str(tmp_path), "samples", row["sample"], "results.json")).read())
        assert results["evaluations"][0]["eval_split"] == "minival"
        assert row["params"] == build_model(row["table_file"], classes=10).count_params()
    with open(result.files["results"], newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 2
    assert math.isfinite(result.best["reward"])


@pytest.mark.slow
def test_the_documented_search_on_an_image_folder(tmp_path, space):
    """docs/nas.md, "Searching on your own images": its recipe file, on a generated folder of PNGs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for index, colour in enumerate(["red", "green", "blue"]):
        os.makedirs(tmp_path / "my_images" / colour)
        for n in range(12):
            pixels = rng.integers(0, 60, (40, 40, 3))
            pixels[..., index] += 150  # the class is the dominant channel
            Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "my_images" / colour / f"{n}.png")
    docs = open(os.path.join(ROOT, "docs", "nas.md"), encoding="utf-8").read()
    recipe = docs.split("```yaml\n# my_search.yaml\n", 1)[1].split("```", 1)[0]
    assert "folder:/data/my_images" in recipe
    recipe = recipe.replace("folder:/data/my_images", f"folder:{tmp_path / 'my_images'}")
    recipe = recipe.replace("base: digits_demo.yaml", f"base: {os.path.join(ROOT, 'hparams', 'digits_demo.yaml')}")
    (tmp_path / "my_search.yaml").write_text(recipe)
    proxy = ("progressive.enabled=false", "data.train_size=32", "data.eval_size=32", "train.epochs=1",
             "train.steps_per_epoch=2", "train.batch_size=8", "eval.batch_size=8")
    result = run_search(space, str(tmp_path / "nas"), recipe=str(tmp_path / "my_search.yaml"), num_samples=1,
                        seed=0, proxy_overrides=proxy, timing_steps=2, warmup_steps=1, log=lambda *_: None)
    assert result.finished and len(result.rows) == 2
    for row in result.rows:
        results = json.loads(open(tmp_path / "nas" / "samples" / row["sample"] / "results.json").read())
        assert results["evaluations"][0]["eval_split"] == "minival" and 0 <= row["accuracy"] <= 1
    assert os.path.exists(result.files["best_model"])


def test_the_nas_command_reports_a_bad_flag_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "efficientnetv2_keras.cli.nas", f"--output_dir={tmp_path}",
                             "--cost=latency"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("nas: error: ") and "params" in result.stderr


@pytest.mark.slow
def test_the_nas_command_runs_a_tiny_search(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "nas_search.py"), f"--output_dir={tmp_path}", "--num_samples=1",
         "--width=0.25", "--depth=0.25", "--timing_steps=2", f"--proxy_override={','.join(TINY_PROXY)}"],
        capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[sample 1 of 1]" in result.stdout and "Best: " in result.stdout
    for name in ("results.csv", "ranking.md", "pareto.png", "best_model.yaml", "best_recipe.yaml"):
        assert (tmp_path / name).exists(), name
