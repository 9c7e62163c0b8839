def handler(payload)
    return payload
