"""The registered generator as an MLflow pyfunc model ("models from code"), for serving.

Serving contract (`mlflow models serve`, `ganflow serve-model`): a DataFrame whose rows hold
either an integer `seed` or a latent vector `z` (z_dim numbers) in; params `truncation` (psi in
[0, 1], default 1) and `format` (`uint8`: images as a (N, H, W, C) uint8 array, default; `png`:
one base64-encoded PNG file per row) select what comes out. A seed gives the same image as
`ganflow sample --seed` and the pipeline's grids. The file is logged with the model together
with the `gan_model` package, so loading it needs neither ganflow nor Ray.

This code runs only where an operator chose to serve the model; `ganflow sample` never runs it
(it loads the weights alone).
"""

import base64

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

FORMATS = ("uint8", "png")


def _bad_request(message):
    # INVALID_PARAMETER_VALUE is answered with HTTP 400 by MLflow's scoring server.
    return MlflowException(message, error_code="INVALID_PARAMETER_VALUE")


def _missing(value):
    return value is None or (np.isscalar(value) and isinstance(value, float) and np.isnan(value))


class GeneratorModel(PythonModel):
    def load_context(self, context):
        from gan_model.checkpoint import load_generator

        self.g = load_generator(context.artifacts["generator"])

    def _latents(self, df):
        import torch

        from gan_model.sampling import latents_for_seeds, latents_from_array

        rows = []
        for i in range(len(df)):
            z = df["z"].iloc[i] if "z" in df.columns else None
            if not _missing(z):
                rows.append(latents_from_array([np.asarray(z, dtype=np.float64)], self.g.z_dim)[0])
                continue
            seed = df["seed"].iloc[i] if "seed" in df.columns else None
            if _missing(seed):
                raise ValueError(f"row {i} has neither a seed nor a latent vector z")
            rows.append(latents_for_seeds([int(seed)], self.g.z_dim)[0])
        if not rows:
            raise ValueError("no rows: send at least one seed or latent vector")
        return torch.stack(rows)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None):
        from gan_model.images import png_bytes
        from gan_model.sampling import generate, truncate

        params = params or {}
        fmt = str(params.get("format", "uint8"))
        if fmt not in FORMATS:
            raise _bad_request(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        try:
            z = truncate(self._latents(model_input), float(params.get("truncation", 1.0)))
        except ValueError as err:
            raise _bad_request(str(err)) from None
        images = generate(self.g, z).transpose(0, 2, 3, 1)  # (N, H, W, C) uint8
        if fmt == "png":
            return [base64.b64encode(png_bytes(img)).decode("ascii") for img in images]
        return images


mlflow.models.set_model(GeneratorModel())
