# One image for the docker-compose demo: reloadctl (agent + CLI) and the sample shop.
# Build context is the repo root; see docker-compose.yml for how it is run.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY pyproject.toml README.md constraints.txt ./
COPY reloadctl ./reloadctl
# The watch extra lets the client container run `reloadctl watch` on the mounted sources.
RUN pip install --no-cache-dir -c constraints.txt '.[watch]'

# The shop's own modules are imported from here (compose bind-mounts the host's copy over
# it, so an edit on the host is what the agents reload).
COPY examples/shop ./examples/shop
ENV PYTHONPATH=/app/examples/shop
