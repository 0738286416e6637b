"""What a trial is scored on: accuracy, fidelity, cost; and the similarity analysis of the original model."""

from ._plots import plot_cka, plot_similarity
from ._similarity import SimilarityReport, block_redundancy, cka_matrix, cosine_cls_matrix, state_names

__all__ = [
    "SimilarityReport",
    "block_redundancy",
    "cka_matrix",
    "cosine_cls_matrix",
    "plot_cka",
    "plot_similarity",
    "state_names",
]
