"""The baselines a served model is measured against (bench.serving_throughput), each run as
its own uvicorn process the way the model server runs:

    python -m bench.baseline_servers ceiling --port P
    python -m bench.baseline_servers plain --model-dir DIR --port P

- `ceiling`: FastAPI answering a constant: what the HTTP stack alone costs, no model.
- `plain`: the simplest FastAPI + torch endpoint an engineer would write for the same saved
  model: a pydantic body of float rows, normalize, forward, argmax, a dict back.
"""

from __future__ import annotations

import argparse

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from shared.ml.checkpoint import load_model


class Rows(BaseModel):
    rows: list[list[float]]


def ceiling_app() -> FastAPI:
    app = FastAPI()

    @app.post("/predict")
    async def predict() -> dict[str, list[int]]:
        return {"predictions": [0]}

    return app


def plain_app(model_dir: str) -> FastAPI:
    loaded = load_model(model_dir)
    model = loaded.model.eval()
    mean = torch.tensor(loaded.normalization.mean, dtype=torch.float32)
    std = torch.tensor(loaded.normalization.std, dtype=torch.float32)
    app = FastAPI()

    @app.post("/predict")
    async def predict(body: Rows) -> dict[str, list[int]]:
        x = (torch.tensor(body.rows, dtype=torch.float32) - mean) / std
        with torch.inference_mode():
            classes = model(x).argmax(dim=1).tolist()
        return {"predictions": classes}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["ceiling", "plain"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-dir")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the model server does
    app = ceiling_app() if args.kind == "ceiling" else plain_app(args.model_dir)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
