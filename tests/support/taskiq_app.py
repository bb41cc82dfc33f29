"""The broker module a taskiq worker process runs in the taskiq executor's tests.

`taskiq worker tests.support.taskiq_app:broker`, with `JOBLIB_TEST_API` (the
server's URL) and `JOBLIB_TEST_TASKIQ_QUEUE` (a Redis list of its own) set.
"""

from __future__ import annotations

import os

from taskiq_redis import ListQueueBroker

from joblib_server.taskiq_executor import serve_internal_jobs
from tests.support.internal_jobs import Boom, Double, Sleepy
from tests.support.services import REDIS_URL
from tests.support.tokens import ADMIN

broker = ListQueueBroker(
    REDIS_URL, queue_name=os.environ.get("JOBLIB_TEST_TASKIQ_QUEUE", "joblib-test")
)

if "JOBLIB_TEST_API" in os.environ:
    serve_internal_jobs(
        broker,
        [Double, Boom, Sleepy],
        api_url=os.environ["JOBLIB_TEST_API"],
        token=ADMIN,
        run_kwargs={"unit": "cm"},
    )
