"""Built-in callers: handlers that call a model server, configured from the environment.

They run in the standard runtime like any handler (an AsyncActor needs only `handler:` and
`env:`; the operator uses the Asya image when `image` is omitted):

    asya_callers.openai.Chat.handle          POST {base}/v1/chat/completions
    asya_callers.openai.Completions.handle   POST {base}/v1/completions
    asya_callers.openai.Embeddings.handle    POST {base}/v1/embeddings
    asya_callers.inference_v2.Infer.handle   POST {base}/v2/models/{model}/infer
    asya_callers.http.Post.handle            POST {url} with a JSON body
    asya_callers.jobs.Launch.handle          create one batch job per envelope (docs/jobs.md)

Failures are typed (asya_callers.errors) so resiliency rules can name them. The guide, with
an AsyncActor per model-server family, is docs/model-servers.md.
"""

__all__: list[str] = []
