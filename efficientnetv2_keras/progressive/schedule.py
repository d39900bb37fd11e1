"""The progressive-learning schedule: a pure function from a recipe to M stages (paper Algorithm 1).

Printing, plotting and testing a schedule needs no model and no data.

Presets (paper Section 4.2, Algorithm 1, Table 6; the released code's stage loop in google/automl
`efficientnetv2/main.py`):
  "paper"    Algorithm 1: S_i = S_0 + (S_e - S_0) * i / (M - 1) and likewise for every regularizer,
             with Table 6's min/max for S, M, L. The paper gives no values for B0-B3 and XL; our
             choices: XL uses L's column (the released code configures XL like L); B0-B3 grow from
             128 px to their official train size, RandAugment 5 -> 10 (S's released maximum), no
             mixup, dropout 0.1 -> the variant's official rate.
  "official" What the released code does: size int(128 + (train - 128) * (i + 1) / M) (the first
             stage is already a quarter of the way up), RandAugment linspace(5, ram, M), mixup and
             cutmix linspace(0, mix, M), dropout fixed at the variant's rate (the released code
             computes a dropout schedule and then never applies it). B0-B3 were trained with
             AutoAugment there, which this package does not implement: RandAugment is off for them.
Any regularizer's range can be overridden: `image_size=(128, 256)`, `dropout_rate=(0.1, 0.4)`,
`randaug_magnitude=10` (a constant), `survival_prob=(1.0, 0.8)` (stochastic depth is not scheduled
unless asked). Fractional sizes are truncated to integers, as the released code does.

Stage sizes the network rewards (`size_multiple`, default 16; None keeps Algorithm 1's sizes): the
network has stride 32 with "same" padding, so a feature map is ceil(size / 2^k) and 40 px ends at
2x2 like 48 px. Measured on B0: a 40 px train step costs 88-95 % of a 48 px one (MACs per pixel vs
32 px: 40 px 1.38x, 48 1.09, 56 1.05, 64 0.90, 72 1.11, 80 0.98; multiples of 16 are all <= 1.09).
So the stages between the first and the last below `SIZE_ROUNDING_BELOW` (128 px) are rounded to the
nearest multiple of 16, ties to the smaller size (the cheaper stage), kept within the first and last
stage's sizes; sizes may repeat (regularization still grows with the stage index). The first and last
stage keep their sizes, and so do sizes >= 128 px: the paper's and the released code's sizes there
(V2-S: 185/242/300 and 171/214/257) waste only 4-10 % against the nearest multiple of 16, so both
presets are unchanged by the rule; it changes small custom stages (`image_size=(32, 48)`).

Per-stage batch size (`batch_scaling=True`, our extension of Algorithm 1; neither the paper nor the
released code changes the batch): a small image needs less activation memory and, on every device we
measured, a small batch of small images leaves the device underused (per-step launch and framework
overhead dominate). So stage i trains with batch B_i = B * (S_e / S_i)^2, the batch that keeps the
activation memory of the last stage (B at size S_e), rounded to a multiple of 8 and of the replica
count and capped at `max_batch_size`. `Stage.batch_ratio` = B_i / B. The learning rate is scaled by
`Stage.lr_scale`, one of two rules (`lr_scaling`):
  "linear" k-times the batch, k-times the learning rate: Goyal et al. 2017 ("Accurate, Large
           Minibatch SGD: Training ImageNet in 1 Hour", §2.1), derived for SGD with momentum.
  "sqrt"   k-times the batch, sqrt(k)-times the learning rate: the square-root scaling rule that
           Malladi et al. 2022 ("On the SDEs and Scaling Rules for Adaptive Gradient Algorithms",
           NeurIPS, §4) derive for RMSprop and Adam, whose steps are normalized by the gradient's
           second moment. The rule also shortens the moment averages' horizons k times
           (1 - beta -> k (1 - beta) for RMSprop's rho and Adam's betas) and divides epsilon by
           sqrt(k); RMSprop, Adam and AdamW apply that per stage (`training.optimizers.StepUpdateMixin`).
           The recipes pick it for adaptive optimizers (`training.recipe`).

A stage's range stays what it is in data: stage i still covers Algorithm 1's L_i epochs of data
([start, end) in epochs of B-sized steps, as without batch scaling). With N steps of the base batch
in an epoch of data (`steps_per_epoch`, examples // B), stage i trains round(L_i N / k_i) optimizer
steps of its batch, so it sees its L_i epochs of data to within half a step, however short the run.
One `fit` runs those steps in epochs of a fixed length N' near N (`fit_layout`, `FitLayout`), chosen
so that the steps fill whole epochs; a stage may start inside a fit epoch (`ProgressiveLearning`
switches at its step). `ProgressiveSchedule.passes` gives the data a stage trains, the table's data
column; the learning-rate schedule and the EMA are defined over the data seen (training progress),
see `training.schedules.TrainingProgress`.
"""

from efficientnetv2_keras.limits import PRESETS, REGULARIZERS  # noqa: F401  (importable from here, as before)
from efficientnetv2_keras.progressive.algorithm import (  # noqa: F401
    OFFICIAL_BASE_SIZE,
    PAPER_TABLE_6,
    SIZE_MULTIPLE,
    progressive_schedule,
    round_stage_sizes,
    scaled_batch_size,
)
from efficientnetv2_keras.progressive.fit_layout import LAST_STAGE_SLACK, FitLayout, layout_stage_steps  # noqa: F401
from efficientnetv2_keras.progressive.stages import (  # noqa: F401
    MIN_SCALED_DECAY,
    SIZE_ROUNDING_BELOW,
    ProgressiveSchedule,
    Stage,
)
