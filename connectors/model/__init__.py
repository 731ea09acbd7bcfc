"""Model artifacts: weights, adapters and their configs (model:PATH)."""
