"""The Asya operator: AsyncActor resources in, Deployments, KEDA ScaledObjects and queues out."""

__all__: list[str] = []
