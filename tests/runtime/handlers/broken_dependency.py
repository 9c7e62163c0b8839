import surely_not_installed_dependency  # noqa: F401


def handler(payload):
    return payload
