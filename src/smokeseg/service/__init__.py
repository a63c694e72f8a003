"""``smokeseg serve``: an HTTP API (FastAPI, uvicorn) over scoring, datasets, experiments and training."""
