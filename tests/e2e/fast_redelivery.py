"""The workers' Celery app with Redis redelivering abandoned messages within seconds.

Production keeps a visibility timeout longer than any run (`visibility_timeout_s`), so a
message whose worker died is redelivered only much later; this test-only app shortens it
(and kombu's sweep of unacknowledged messages) so that a test can watch the second
delivery happen: `celery -A tests.e2e.fast_redelivery worker`.
"""

from workers.celery_app import app

app.conf.broker_transport_options = {
    **app.conf.broker_transport_options,
    "visibility_timeout": 2,
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}
