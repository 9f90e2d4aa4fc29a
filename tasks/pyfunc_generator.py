"""The registered generator as an MLflow pyfunc model ("models from code").

Serving contract: a DataFrame with an integer column `seed` in, uint8 images
(N, H, W, C) out. Each seed maps to one latent, so an image can always be
reproduced from its seed. The file is logged with the model together with
the `gan_model` package, so loading needs neither ganflow nor Ray.
"""

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class GeneratorModel(PythonModel):
    def load_context(self, context):
        from gan_model.checkpoint import load_generator

        self.g = load_generator(context.artifacts["generator"])

    def predict(self, context, model_input, params=None):
        from gan_model.sampling import generate, latents_for_seeds

        seeds = np.asarray(model_input["seed"], dtype=np.int64)
        images = generate(self.g, latents_for_seeds(seeds, self.g.z_dim))
        return images.transpose(0, 2, 3, 1)


mlflow.models.set_model(GeneratorModel())
