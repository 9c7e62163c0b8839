"""The Asya operator: AsyncActor resources in, Deployments, KEDA ScaledObjects and queues out."""
