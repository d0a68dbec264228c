"""The process that serves one saved model over HTTP (no database, no NATS).

`python -m services.deployer.model_server --model-dir DIR --port P` loads the model once,
then answers `POST /predict`, `GET /healthz`, `/readyz`, `/metrics`, `/docs` and `GET /`.
"""
