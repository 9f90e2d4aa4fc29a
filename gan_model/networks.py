"""The networks' public names, kept where callers have always imported them from.

The families themselves live in `gan_model/architectures/` (one module each, registered);
`Generator` and `Discriminator` here are the DCGAN ones.
"""

from gan_model.architectures import build_generator, build_networks, generator_kwargs  # noqa: F401
from gan_model.architectures.dcgan import Discriminator, Generator, init_weights  # noqa: F401
