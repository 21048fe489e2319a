"""The scaling compiler: recipe → per-tensor policy. Pure Python; never imports torch."""

from mupctl.scaling.compiler import compile_policy

__all__ = ["compile_policy"]
