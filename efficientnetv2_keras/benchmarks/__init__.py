"""The benchmark sections behind `effnetv2-benchmark` (efficientnetv2_keras.cli.benchmark): `models`, `data`,
`export`, `progressive`, `stages`, each a module with `run(options) -> str` (a report). `options` is any
object with the section's attributes (`quick`, `<section>_*`): the command passes its flags, a test or a
notebook a `types.SimpleNamespace`. This package imports nothing from the commands."""
