"""Recipe loading and validation (YAML → `Recipe`)."""

from mupctl.recipe.load import load_recipe, recipe_to_yaml
from mupctl.recipe.schema import Recipe

__all__ = ["Recipe", "load_recipe", "recipe_to_yaml"]
