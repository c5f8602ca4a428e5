"""Attention maps out of a trained network, as volumes, pictures and a page a person can explore.

``extraction`` gets the maps out of a network; ``concentration`` measures them; ``montage``, ``viewer`` and
``page`` render them; ``explainer`` runs the whole thing over volumes (what the bundles' ``explain.json`` calls).
"""

from medattn3d.explain.concentration import attention_ratio, class_ratios, separation_auc
from medattn3d.explain.explainer import AttentionExplainer, labels_for, summary_lines
from medattn3d.explain.extraction import AttentionPredictor, attention_names, default_map
from medattn3d.explain.montage import write_montage
from medattn3d.explain.page import write_index

__all__ = [
    "AttentionExplainer",
    "AttentionPredictor",
    "attention_names",
    "attention_ratio",
    "class_ratios",
    "default_map",
    "labels_for",
    "separation_auc",
    "summary_lines",
    "write_index",
    "write_montage",
]
