"""Prints the family's parameters and FLOPs as a Markdown table: `python tools/model_summary.py`.

FLOPs are multiply-adds of one image at the variant's eval size (the official README's convention).
"""

from absl import app, flags

from efficientnetv2_keras.models import VARIANTS, family_summary, format_summary

flags.DEFINE_list("variants", list(VARIANTS), "Variants to report.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    print(format_summary(family_summary(FLAGS.variants)))


if __name__ == "__main__":
    app.run(main)
