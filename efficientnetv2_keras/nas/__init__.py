"""Training-aware neural architecture search (paper §3.3): search space, reward, resumable random search.

    from efficientnetv2_keras.nas import SearchSpace, run_search, scaled_backbone
    result = run_search(SearchSpace(scaled_backbone("b0", width=0.5)), "runs/nas", num_samples=6)
    # runs/nas/best_model.yaml -> model.name of any recipe, or build_model("runs/nas/best_model.yaml")

Command line: `effnetv2-nas --output_dir=runs/nas` (`python tools/nas_search.py` in a checkout). See docs/nas.md.
"""

from efficientnetv2_keras.nas.measure import measure_train_step
from efficientnetv2_keras.nas.reward import PAPER_V, PAPER_W, reward
from efficientnetv2_keras.nas.results import (
    BACKBONE,
    SearchError,
    format_ranking,
    operator_preference,
    pareto_front,
    read_results,
    score_rows,
)
from efficientnetv2_keras.nas.search import (
    DEFAULT_PROXY_OVERRIDES,
    SearchResult,
    evaluate_candidate,
    proxy_config,
    run_search,
    write_recipe,
)
from efficientnetv2_keras.nas.space import SearchSpace, describe_table, sample_specs, scaled_backbone, table_digest

__all__ = [
    "BACKBONE", "DEFAULT_PROXY_OVERRIDES", "PAPER_V", "PAPER_W", "SearchError", "SearchResult", "SearchSpace",
    "describe_table", "evaluate_candidate", "format_ranking", "measure_train_step", "operator_preference",
    "pareto_front", "proxy_config", "read_results", "reward", "run_search", "sample_specs",
    "scaled_backbone", "score_rows", "table_digest", "write_recipe",
]
