"""Stage 6, predict: apply a registered model to imagery (maps, labels, embeddings)."""
