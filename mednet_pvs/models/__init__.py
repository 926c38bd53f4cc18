"""Model cards, the model registry, network builders and importers of published weights."""
