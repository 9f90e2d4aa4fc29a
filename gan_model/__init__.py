"""Pure PyTorch: networks, losses, EMA, the training loop, sampling, image
decoding, shards and FID/KID math. Imports no orchestration or cloud library."""

__all__ = ["config", "networks", "training", "fid"]
