"""Developer tooling of the repository (not part of the product wheel or the images):
the chart's schema generator, the pinned helm installer and the workflow-notebook linter.
Run from the repository root, e.g. ``python -m tools.chart_schema``."""
