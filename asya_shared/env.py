"""Names of the environment variables that configure Asya's processes.

The operator writes these into pod specs and the sidecar, crew and CLI read them, so each name
is spelled once, here. What each one means is documented in docs/sidecar.md.
"""

from __future__ import annotations

# Identity and routing
ACTOR = "ASYA_ACTOR"
NAMESPACE = "ASYA_NAMESPACE"
TRANSPORT = "ASYA_TRANSPORT"
QUEUE = "ASYA_QUEUE"
SINK_QUEUE = "ASYA_SINK_QUEUE"
SUMP_QUEUE = "ASYA_SUMP_QUEUE"
# The holding crew's queues, in the crew's namespace like x-sink's (default: the actor's own).
JOIN_QUEUE = "ASYA_JOIN_QUEUE"
PAUSE_QUEUE = "ASYA_PAUSE_QUEUE"
QUEUE_AUTOCREATE = "ASYA_QUEUE_AUTOCREATE"

# Runtime link
SOCKET_DIR = "ASYA_SOCKET_DIR"
HANDLER = "ASYA_HANDLER"
RUNTIME_CONCURRENCY = "ASYA_RUNTIME_CONCURRENCY"
RUNTIME_READY_TIMEOUT = "ASYA_RUNTIME_READY_TIMEOUT"

# Work
CONCURRENCY = "ASYA_CONCURRENCY"
ACTOR_TIMEOUT = "ASYA_ACTOR_TIMEOUT"
SHUTDOWN_TIMEOUT = "ASYA_SHUTDOWN_TIMEOUT"
CREW_RETRY_DELAY = "ASYA_CREW_RETRY_DELAY"
RESILIENCY = "ASYA_RESILIENCY"

# Observability
METRICS_HOST = "ASYA_METRICS_HOST"
METRICS_PORT = "ASYA_METRICS_PORT"
LOG_LEVEL = "ASYA_LOG_LEVEL"
EVENT_LOOP = "ASYA_EVENT_LOOP"
LOG_FORMAT = "ASYA_LOG_FORMAT"
EVENTS_URL = "ASYA_EVENTS_URL"
# Sidecar settings an actor may give in its own `env` (which is otherwise the handler's):
# the operator and `asya dev` copy them to the actor's sidecar.
SIDECAR_PASSTHROUGH = (LOG_LEVEL, LOG_FORMAT, EVENTS_URL)

# Transports
STATE_DIR = "ASYA_STATE_DIR"
LOCAL_LEASE_SECONDS = "ASYA_LOCAL_LEASE_SECONDS"
RABBITMQ_URL = "ASYA_RABBITMQ_URL"
RABBITMQ_QUEUE_TYPE = "ASYA_RABBITMQ_QUEUE_TYPE"
SQS_ENDPOINT = "ASYA_SQS_ENDPOINT"
SQS_VISIBILITY_TIMEOUT = "ASYA_SQS_VISIBILITY_TIMEOUT"
SQS_WAIT_SECONDS = "ASYA_SQS_WAIT_SECONDS"
SQS_MAX_RECEIVE_COUNT = "ASYA_SQS_MAX_RECEIVE_COUNT"
PUBSUB_PROJECT = "ASYA_PUBSUB_PROJECT"
PUBSUB_ACK_DEADLINE = "ASYA_PUBSUB_ACK_DEADLINE"
PUBSUB_MAX_DELIVERY_ATTEMPTS = "ASYA_PUBSUB_MAX_DELIVERY_ATTEMPTS"
# Google's own names, read by its client libraries and tools as well.
GOOGLE_CLOUD_PROJECT = "GOOGLE_CLOUD_PROJECT"
PUBSUB_EMULATOR_HOST = "PUBSUB_EMULATOR_HOST"

# Crew result stores
RESULT_STORE = "ASYA_RESULT_STORE"
SUMP_STORE = "ASYA_SUMP_STORE"
CREW_METRICS_PORT = "ASYA_CREW_METRICS_PORT"
CREW_METRICS_HOST = "ASYA_CREW_METRICS_HOST"
S3_ENDPOINT = "ASYA_S3_ENDPOINT"
# x-join: its store (sqlite:///... or postgresql://...), how often it decides joins past
# their deadline, how long a claim on a join is held, how long finished joins are remembered.
JOIN_STORE = "ASYA_JOIN_STORE"
JOIN_SWEEP_INTERVAL = "ASYA_JOIN_SWEEP_INTERVAL"
JOIN_LEASE = "ASYA_JOIN_LEASE"
JOIN_KEEP_DONE = "ASYA_JOIN_KEEP_DONE"
# x-pause: how long a pause lasts when the envelope's x-asya-pause-timeout does not say.
PAUSE_TIMEOUT = "ASYA_PAUSE_TIMEOUT"

# Gateway: its internal base URL, given to every sidecar and to the crew; unset, nothing is
# reported (docs/gateway.md).
GATEWAY_URL = "ASYA_GATEWAY_URL"
# How often a sidecar posts its batch of reports (and learns cancellations); default 1s.
GATEWAY_REPORT_INTERVAL = "ASYA_GATEWAY_REPORT_INTERVAL"
# `asya gateway`: each flag can be given in the environment instead (docs/gateway.md).
GATEWAY_HOST = "ASYA_GATEWAY_HOST"
GATEWAY_PORT = "ASYA_GATEWAY_PORT"
GATEWAY_INTERNAL_PORT = "ASYA_GATEWAY_INTERNAL_PORT"
GATEWAY_RETENTION = "ASYA_GATEWAY_RETENTION"
GATEWAY_INSECURE = "ASYA_GATEWAY_INSECURE"
GATEWAY_STORE = "ASYA_GATEWAY_STORE"
GATEWAY_FLOWS = "ASYA_GATEWAY_FLOWS"
GATEWAY_API_KEYS_FILE = "ASYA_GATEWAY_API_KEYS_FILE"
# The CLI's task commands (asya submit, get, ls, watch, cancel): the key they send.
API_KEY = "ASYA_API_KEY"
