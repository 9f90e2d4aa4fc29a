"""One Prefect task per pipeline step, each a thin adapter between one outside
system (S3, Ray, MLflow) and the pure code in `gan_model`.

Modules are imported where used: importing `tasks` itself pulls in nothing heavy.
"""
