"""Prints the family's parameters and FLOPs as a Markdown table: `effnetv2-summary [--variants=b0,s]`.

FLOPs are multiply-adds of one image at the variant's eval size (the official README's convention).
"""

from absl import flags

from efficientnetv2_keras import cli

from efficientnetv2_keras.models import VARIANTS, family_summary, format_summary

flags.DEFINE_list("variants", list(VARIANTS), "Variants to report.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    print(format_summary(family_summary(FLAGS.variants)))


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
