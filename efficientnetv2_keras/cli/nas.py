"""Training-aware architecture search (paper §3.3): `effnetv2-nas --output_dir=runs/nas`.

Random search over the §3.3 space around a backbone; each sample trains briefly with the proxy
recipe and is scored A * S**w * P**v. Rerunning the same command resumes (finished samples are
skipped). Writes results.csv, ranking.md, pareto.png, best_model.yaml and best_recipe.yaml; then
`effnetv2-train --hparams=<output_dir>/best_recipe.yaml --model_dir=runs/best`.
The defaults (digits, 32 px, B0 at width 0.25 and depth 0.5, 5 samples of 4 epochs) take about 6
minutes on 2 CPU cores. See docs/nas.md.
"""

from absl import flags

from efficientnetv2_keras import cli

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", None, "Where the search writes its files (rerun to resume).", required=True)
flags.DEFINE_string("hparams", "digits_demo", "Recipe the proxy runs start from, and that best_recipe.yaml uses.")
flags.DEFINE_multi_string("proxy_override", None, "Proxy-run overrides 'a.b=c' (repeatable or comma-separated); "
                          "default: the package's DEFAULT_PROXY_OVERRIDES (32 px, 4 epochs, no augmentation).")
flags.DEFINE_string("backbone", "b0", "Backbone variant or model-table file; channels and strides come from it.")
flags.DEFINE_float("width", 0.25, "Backbone width coefficient (0 = the variant's own).")
flags.DEFINE_float("depth", 0.5, "Backbone depth coefficient (0 = the variant's own).")
flags.DEFINE_integer("num_samples", 5, "Sampled tables (the backbone is trained in addition).")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_float("time_budget", 0, "Wall-clock budget of this call in seconds (0 = none): no model starts that "
                   "would not finish in time; rerun the same command to continue.")
flags.DEFINE_integer("repeats_delta", 1, "A stage has the backbone's number of layers +- this.")
flags.DEFINE_float("reward_w", -0.07, "Step-time exponent w of the reward (§3.3: -0.07).")
flags.DEFINE_float("reward_v", -0.05, "Size exponent v of the reward (§3.3: -0.05).")
flags.DEFINE_enum("cost", "params", ["params", "flops"], "Size term P of the reward: parameters or FLOPs.")
flags.DEFINE_float("minival", 0.1, "Part of the training split held out for the proxy accuracy (count or fraction).")
flags.DEFINE_integer("timing_steps", 5, "Timed training steps per model (median; after 2 warm-up steps).")
flags.DEFINE_enum("clock", "auto", ["auto", "process", "wall"], "Step-time clock: auto = process CPU time on CPU, "
                  "wall time of synchronized steps on an accelerator.")


def main(argv):
    del argv
    from efficientnetv2_keras.hparams import split_overrides
    from efficientnetv2_keras.nas import DEFAULT_PROXY_OVERRIDES, SearchSpace, run_search, scaled_backbone

    backbone = scaled_backbone(FLAGS.backbone, width=FLAGS.width or None, depth=FLAGS.depth or None)
    overrides = split_overrides(FLAGS.proxy_override) if FLAGS.proxy_override else DEFAULT_PROXY_OVERRIDES
    run_search(
        SearchSpace(backbone, repeats_delta=FLAGS.repeats_delta),
        FLAGS.output_dir,
        recipe=FLAGS.hparams,
        num_samples=FLAGS.num_samples,
        seed=FLAGS.seed,
        time_budget=FLAGS.time_budget or None,
        proxy_overrides=tuple(overrides),
        minival=FLAGS.minival if FLAGS.minival < 1 else int(FLAGS.minival),
        w=FLAGS.reward_w,
        v=FLAGS.reward_v,
        cost=FLAGS.cost,
        timing_steps=FLAGS.timing_steps,
        clock=FLAGS.clock,
    )


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
