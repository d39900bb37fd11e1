"""Benchmark sections of `effnetv2-benchmark` (efficientnetv2_keras.cli.benchmark): `models`, `data`,
`export`, `progressive`, each a module with `run(flags) -> str`."""
