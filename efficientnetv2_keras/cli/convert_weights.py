"""Converts timm's tf_efficientnetv2_* checkpoints (the released weights) into .weights.h5 files.

    # a downloaded file (e.g. model.safetensors of huggingface.co/timm/tf_efficientnetv2_s.in21k):
    effnetv2-convert-weights --source=model.safetensors --name=tf_efficientnetv2_s.in21k --output=weights/
    # by timm name (timm downloads it; needs `pip install 'efficientnetv2-keras[timm]'` and a network):
    effnetv2-convert-weights --source=tf_efficientnetv2_xl.in21k_ft_in1k --output=weights/
    # every published checkpoint:
    effnetv2-convert-weights --source=all --output=weights/
    # what there is:
    effnetv2-convert-weights --list

Writes `<name>.weights.h5` and `<name>.json` (source, tag, sizes, crop, normalization, classes, and
the numeric check against timm when timm can be imported). Then:
`EfficientNetV2S(weights="weights/tf_efficientnetv2_s.in21k.weights.h5", classes=21843)`.
"""

import json
import sys
import time

from absl import app, flags

from efficientnetv2_keras import cli

from efficientnetv2_keras.weights import TIMM_CHECKPOINTS, convert_timm

flags.DEFINE_string("source", None, "A .safetensors/.pth file, a timm name with tag "
                    "(tf_efficientnetv2_s.in21k), or 'all' for every published checkpoint.")
flags.DEFINE_string("output", "weights", "The .weights.h5 file to write, or a folder.")
flags.DEFINE_string("name", None, "The timm name with tag when --source is a file whose name does not say it.")
flags.DEFINE_string("variant", None, "Our variant (b0..xl); default: inferred from the tensors.")
flags.DEFINE_enum("verify", "auto", ["auto", "true", "false"], "Compare logits with timm's on a random batch.")
flags.DEFINE_integer("verify_size", 96, "Image size of the random batch.")
flags.DEFINE_bool("overwrite", False, "Replace existing output files.")
flags.DEFINE_bool("list", False, "List the published checkpoints and exit.")
FLAGS = flags.FLAGS


def _list():
    print("| timm name | variant | classes | train/eval size | crop | normalization | timm top-1 |")
    print("|---|---|---:|---|---:|---|---:|")
    for c in TIMM_CHECKPOINTS.values():
        print(f"| {c.name} | {c.variant} | {c.classes} | {c.train_size}/{c.eval_size} | {c.crop_pct} | "
              f"{c.input_normalization} | {c.timm_top1 or '-'} |")


def main(argv):
    del argv
    if FLAGS.list:
        _list()
        return 0
    if not FLAGS.source:
        raise app.UsageError("Give --source (a file, a timm name, or 'all'), or --list.")
    sources = list(TIMM_CHECKPOINTS) if FLAGS.source == "all" else [FLAGS.source]
    if len(sources) > 1 and (FLAGS.output.endswith(".weights.h5") or FLAGS.name or FLAGS.variant):
        raise app.UsageError("--source=all writes one file per checkpoint: give a folder as --output, no --name "
                             "or --variant.")
    verify = {"auto": "auto", "true": True, "false": False}[FLAGS.verify]
    for source in sources:
        start = time.perf_counter()
        try:
            info = convert_timm(source, FLAGS.output, name=FLAGS.name, variant=FLAGS.variant, verify=verify,
                                verify_size=FLAGS.verify_size, overwrite=FLAGS.overwrite)
        except (ValueError, OSError, ImportError) as error:
            if FLAGS.verbose:
                raise
            print(f"{cli.program()}: error: {source}: {error}", file=sys.stderr)
            return 1
        print(json.dumps(info, indent=2))
        print(f"converted {source} in {time.perf_counter() - start:.1f} s -> {info['weights_path']}", file=sys.stderr)
    return 0


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
