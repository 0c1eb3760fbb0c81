"""The one table from SERVE_HANDLER to a model family: its handler and its settings, by dotted name.

serve/ imports no model family. It finds one through this table, so a new family is a package under models/ (a
Handler, and a FamilySettings when it has settings of its own) and one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    handler: str  # "module:Class" of its serve.handler.Handler
    settings: str | None = None  # "module:Class" of its serve.settings.FamilySettings, in a module light to import


FAMILIES = {
    "xgboost": Family("models.xgboost.handler:XGBoostHandler", "models.xgboost.settings:XGBoostSettings"),
    "pat": Family("models.pat.handler:PatHandler", "models.pat.settings:PatSettings"),
}
DEFAULT = "xgboost"  # SERVE_HANDLER when unset; each image sets it


def load(dotted: str):
    """The object a "module:name" string names, its module imported."""
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)
