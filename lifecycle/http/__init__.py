"""The HTTP service: OpenDSR erasure requests and the project's own ``/v1``
endpoints on FastAPI, served by uvicorn beside the scheduler (``lifecycle serve
--http``) or alone (``lifecycle api``). See ``lifecycle.http.app``."""
