"""torch -> ONNX (-> TensorRT) export with validation against eager (`ducho_fast.export`)."""
