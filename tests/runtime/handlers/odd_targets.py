VALUE = 42


class NeedsArgs:
    def __init__(self, model_path):
        self.model_path = model_path

    def predict(self, payload):
        return payload


class Plain:
    def predict(self, payload):
        return payload


class BrokenInit:
    def __init__(self):
        raise OSError("GPU not found")

    def predict(self, payload):
        return payload
