class Tokenizer:
    def split(self, payload):
        return {"words": payload["text"].split()}


def upper(payload):
    return {"text": payload["text"].upper()}
