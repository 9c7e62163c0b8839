raise RuntimeError("model weights missing at /models/weights.bin")
