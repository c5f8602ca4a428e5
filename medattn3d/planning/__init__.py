"""Planning: dataset fingerprint -> plan -> a self-contained bundle written from a template.

``plan_bundle(dataset_dir, out, ...)`` is the entry point (``medattn3d plan``); :mod:`.rules` holds the planning
rules, :mod:`.templates` the four templates, :mod:`.configs` the config generator, :mod:`.shipped` regenerates the
shipped bundles from the demo data.
"""

from medattn3d.planning.bundle import build_bundle, plan_bundle
from medattn3d.planning.rules import Plan, PlanError, make_plan
from medattn3d.planning.templates import TEMPLATES

__all__ = ["TEMPLATES", "Plan", "PlanError", "build_bundle", "make_plan", "plan_bundle"]
