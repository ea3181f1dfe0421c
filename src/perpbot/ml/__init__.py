"""Features, labels, datasets, model training/export and the ONNX-served ML filter."""
