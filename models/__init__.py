"""Model building: data loading, training, ONNX export and evaluation (run by `make models`)."""
