"""``smokeseg serve``: the HTTP API (FastAPI under uvicorn) over scoring, datasets, experiments and training."""
