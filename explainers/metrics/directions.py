"""Which way is better for each automatic metric: the one definition, importable without torch.

``import explainers.metrics.directions`` imports nothing but this module (``explainers.metrics``
loads its submodules lazily), so the web process can label results with it.
"""

from __future__ import annotations

#: Whether a larger value is better for each metric key returned by
#: :func:`explainers.metrics.evaluate.evaluate_methods`.
HIGHER_IS_BETTER: dict[str, bool] = {
    "deletion_auc": False,
    "insertion_auc": True,
    "occlusion_spearman": True,
    "pointing_game": True,
    "energy_in_region": True,
    "localization_error": False,
}

#: The sanity checks' similarity between a method's maps on the trained and on the randomized
#: model (:func:`explainers.metrics.sanity.map_similarity`): lower is better, since a faithful
#: method's maps change when the weights they explain are destroyed.
SANITY_SIMILARITY_HIGHER_IS_BETTER: bool = False
