from celery import Celery

app = Celery("jobs", broker="memory://", backend="cache+memory://")
app.conf.update(task_default_queue="jobs", broker_connection_retry_on_startup=False)
