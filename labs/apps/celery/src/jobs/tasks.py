from jobs.app import app

RATE = 2


@app.task
def add(x, y):
    return x + y


@app.task(name="jobs.scale")
def scale(x):
    return x * RATE


@app.task(bind=True, max_retries=3)
def retries(self):
    return self.max_retries
