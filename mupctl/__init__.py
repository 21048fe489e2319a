"""mupctl: one YAML recipe → a resolved muP policy → torchrun training, resume and diagnostics."""

__version__ = "0.1.0"
