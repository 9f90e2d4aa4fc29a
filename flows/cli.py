"""`ganflow`: the one entry point.

Every command that produces a result accepts --json and then prints exactly
one JSON object on stdout (everything else goes to stderr). Problems the user
can fix end with one line, `ganflow: error: ...`, and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from gan_model.config import GanflowConfig

EXIT_PIPELINE, EXIT_USAGE = 1, 2


class UserError(Exception):
    def __init__(self, message: str, code: int = EXIT_PIPELINE):
        super().__init__(message)
        self.code = code


@contextlib.contextmanager
def stdout_to_stderr(enabled: bool) -> Iterator[None]:
    """Send everything written to stdout (also by Ray's log threads and subprocesses) to stderr."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _config(args) -> "GanflowConfig":
    from gan_model.config import load_config
    return load_config(args.config, args.set or [])


def _emit(args, result: dict, human: str) -> None:
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print(human)


# --- commands -------------------------------------------------------------

def cmd_run(args) -> dict:
    from flows.environment import data_source, mlflow_ui_command, prefect_ui_command

    cfg = _config(args)
    with stdout_to_stderr(args.json):
        print(f"ganflow: resolved configuration:\n{_yaml(cfg)}", file=sys.stderr)
        with data_source(cfg) as cfg:
            from tasks.ingest import check_source
            from tasks.register import _client
            check_source(cfg.data)  # fail before any compute on bucket/credential/endpoint problems
            _client(cfg.registry)
            from flows.pipeline import ganflow_pipeline
            _hide_user_error_tracebacks()
            try:
                summary = ganflow_pipeline(config=cfg)
            finally:
                _shutdown_ray()
    summary["mlflow_ui"] = mlflow_ui_command(summary["tracking_uri"])
    summary["prefect_ui"] = prefect_ui_command()
    alias = f" -> @{summary['alias']}" if summary["alias"] else ""
    fid_note = "" if summary["fid_comparable"] else "  [not comparable with published FIDs]"
    _emit(args, summary, "\n".join([
        "ganflow run complete",
        f"  data set    {summary['dataset_version']} ({summary['n_images']} images, {summary['n_skipped']} skipped)",
        f"  FID         {summary['fid']:.4g}   KID {summary['kid']:.4g} +- {summary['kid_std']:.2g}{fid_note}",
        f"  model       {summary['model_name']} v{summary['model_version']}{alias} ({summary['decision']})",
        f"  samples     {summary['sample_grid']}",
        f"  MLflow UI   {summary['mlflow_ui']}",
        f"  Prefect UI  {summary['prefect_ui']}",
    ]))
    return summary


def cmd_ingest(args) -> dict:
    from flows.environment import data_source

    overrides = list(args.set or [])
    if args.source:
        overrides.append(f"data.source={args.source}")
    if args.endpoint_url:
        overrides.append(f"data.endpoint_url={args.endpoint_url}")
    from gan_model.config import load_config
    cfg = load_config(args.config, overrides)
    with stdout_to_stderr(args.json), data_source(cfg) as cfg:
        from tasks.ingest import ingest_dataset
        ds = ingest_dataset(cfg.data)
    result = ds.model_dump()
    _emit(args, result, f"data set {ds.version}: {ds.n_images} images at {ds.uri} "
          f"({ds.n_skipped} skipped{': ' + json.dumps(ds.skipped) if ds.skipped else ''}; "
          f"{ds.bytes_downloaded / 1e6:.1f} MB downloaded{', reused' if ds.reused else ''})")
    return result


def cmd_fid(args) -> dict:
    import numpy as np

    from gan_model.config import build_config
    from gan_model.evaluation import compare
    from gan_model.fid import FeatureStats
    from gan_model.images import load_folder
    from gan_model.inception import FEATURE_DIM, InceptionFeatures, make_random_weights, sha256_file
    from tasks.evaluate import resolve_weights

    cfg = build_config({}, [f"eval.fid_weights={args.weights}"])
    sets = []
    for folder in (args.dir_a, args.dir_b):
        try:
            images = load_folder(folder)
        except FileNotFoundError as err:
            raise UserError(f"{err}: pass two folders of images", EXIT_USAGE) from None
        if len(images) < 2:
            raise UserError(f"{folder!r} holds {len(images)} decodable images; FID needs at least 2 per side",
                            EXIT_USAGE)
        sets.append(images)

    def batches(images):
        for i in range(0, len(images), args.batch_size):  # same-size runs batch together
            chunk = images[i:i + args.batch_size]
            for shape in dict.fromkeys(a.shape for a in chunk):
                yield np.stack([a for a in chunk if a.shape == shape])

    with stdout_to_stderr(args.json):
        path, kind = resolve_weights(cfg.eval, cfg.data)
        if kind == "random":
            import tempfile
            with tempfile.TemporaryDirectory(prefix="ganflow-fid-") as tmp:
                net = InceptionFeatures(make_random_weights(Path(tmp) / "random.pth"), batch_size=args.batch_size)
                net.calibrate_batchnorm(batches(sets[1]))  # on the reference side
                weights_sha = sha256_file(net.save_weights(Path(tmp) / "calibrated.pth"))
        else:
            net = InceptionFeatures(path, batch_size=args.batch_size)
            weights_sha = sha256_file(path)
        stats = []
        for images in sets:
            s = FeatureStats(FEATURE_DIM, keep_features=len(images))
            for b in batches(images):
                s.update(net(b))
            stats.append(s)
        scores = compare(stats[0], stats[1], kid_subsets=50,
                         kid_subset_size=min(1000, stats[0].count, stats[1].count))
    result = {**scores, "weights": kind, "weights_sha256": weights_sha}
    _emit(args, result, f"FID {scores['fid']:.6g}   KID {scores['kid']:.4g} +- {scores['kid_std']:.2g}   "
          f"({scores['n_generated']} vs {scores['n_reference']} images, {kind} Inception weights)")
    return result


def cmd_sample(args) -> dict:
    import numpy as np
    import pandas as pd

    from gan_model.config import RegistryConfig
    from gan_model.images import make_grid, save_png
    from tasks.register import tracking_uri

    import mlflow
    uri = tracking_uri(RegistryConfig())
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with stdout_to_stderr(args.json):
        try:
            model = mlflow.pyfunc.load_model(args.model)
        except Exception as err:
            raise UserError(f"cannot load model {args.model!r} from {uri} ({type(err).__name__}): "
                            f"use models:/NAME@champion or models:/NAME/VERSION") from None
        images = model.predict(pd.DataFrame({"seed": np.arange(args.seed, args.seed + args.n, dtype=np.int64)}))
    out = Path(args.out)
    if out.suffix.lower() == ".png":
        save_png(make_grid(images.transpose(0, 3, 1, 2)), out)
        files = [str(out)]
    else:
        files = [str(save_png(img, out / f"seed{args.seed + i:06d}.png")) for i, img in enumerate(images)]
    result = {"model": args.model, "n": int(len(images)), "out": str(out), "files": len(files)}
    _emit(args, result, f"{len(images)} images from {args.model} -> {out}")
    return result


def cmd_evaluate(args) -> dict:
    """FID/KID of a registered generator under the protocol of the run that registered it
    (overridable with --set), against the data set version it was trained on."""
    import tempfile

    import mlflow
    import yaml
    from mlflow.exceptions import MlflowException

    from gan_model.config import RegistryConfig, build_config
    from tasks.datastore import read_published_index, version_uri
    from tasks.register import _client
    from tasks.types import DatasetVersion

    client, _, uri = _client(RegistryConfig())
    match = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", args.model)
    if not match:
        raise UserError(f"--model {args.model!r}: use models:/NAME@ALIAS or models:/NAME/VERSION", EXIT_USAGE)
    name, alias, number = match.groups()
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
    except MlflowException:
        raise UserError(f"no model {args.model} at {uri}: list versions in the MLflow UI", EXIT_USAGE) from None
    with stdout_to_stderr(args.json), tempfile.TemporaryDirectory(prefix="ganflow-eval-") as tmp:
        raw = yaml.safe_load(open(client.download_artifacts(mv.run_id, "config.yaml", tmp)))
        cfg = build_config(raw, args.set or [])
        version = mv.tags.get("ganflow.dataset_version", "")
        ds_uri = version_uri(cfg.data, version)
        index = read_published_index(ds_uri, cfg.data)
        if index is None:
            raise UserError(f"data set version {version!r} of {args.model} is not under {cfg.data.processed_uri}: "
                            f"set data.processed_uri (--set) or re-run `ganflow ingest`")
        dataset = DatasetVersion(uri=ds_uri, version=version, n_images=index["n_images"],
                                 resolution=index["resolution"], channels=index["channels"])
        model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=args.model, dst_path=tmp))
        generator = next(model_dir.rglob("generator.pt"))
        out = Path(cfg.eval.output_dir).expanduser().resolve() / f"{name}-v{mv.version}"
        out.mkdir(parents=True, exist_ok=True)
        local_generator = Path(shutil.copy(generator, out / "generator.pt"))
        from tasks.evaluate import evaluate_generator_file
        result = evaluate_generator_file(cfg, dataset, local_generator)
    recorded = mv.tags.get("ganflow.fid") if mv.tags.get("ganflow.protocol_key") == result.protocol["key"] else None
    summary = {"model_name": name, "model_version": str(mv.version), "dataset_version": version,
               **result.model_dump(), "recorded_fid": float(recorded) if recorded else None}
    _emit(args, summary, f"{name} v{mv.version}: FID {result.fid:.6g}   KID {result.kid:.4g} +- {result.kid_std:.2g}"
          + (f"   (recorded at registration: {float(recorded):.6g})" if recorded else
             "   (protocol differs from the registration's: not comparable with its recorded FID)"))
    return summary


def cmd_promote(args) -> dict:
    from gan_model.config import RegistryConfig
    from tasks.register import _client, set_alias

    client, _, uri = _client(RegistryConfig())
    try:
        client.get_model_version(args.name, str(args.version))
    except Exception:
        raise UserError(f"model {args.name!r} has no version {args.version} at {uri}: "
                        f"list versions in the MLflow UI", EXIT_USAGE) from None
    set_alias(client, args.name, str(args.version), args.alias)
    client.set_model_version_tag(args.name, str(args.version), "ganflow.decision", f"manual: @{args.alias}")
    result = {"model_name": args.name, "model_version": str(args.version), "alias": args.alias}
    _emit(args, result, f"{args.name} v{args.version} -> @{args.alias}")
    return result


def cmd_serve(args) -> dict:
    if not os.environ.get("PREFECT_API_URL"):
        raise UserError("schedules need a Prefect server: start one (`ganflow services` or `prefect server start`) "
                        "and set PREFECT_API_URL=http://127.0.0.1:4200/api", EXIT_USAGE)
    from flows.environment import data_source
    from flows.pipeline import ganflow_pipeline

    _hide_user_error_tracebacks()
    cfg = _config(args)
    with data_source(cfg) as cfg:
        print(f"serving deployment {args.name!r} on cron {args.cron!r}; Ctrl-C stops it", file=sys.stderr)
        ganflow_pipeline.serve(name=args.name, cron=args.cron, parameters={"config": cfg.model_dump(mode="json")})
    return {}


def cmd_services(args) -> dict:
    from infra.services import run_services
    try:
        run_services(s3_port=args.s3_port, mlflow_port=args.mlflow_port, prefect_port=args.prefect_port)
    except RuntimeError as err:  # e.g. the port is taken
        raise UserError(f"{err}: free the port or pass --s3-port/--mlflow-port/--prefect-port") from None
    return {}


# --- plumbing -------------------------------------------------------------

def _yaml(cfg) -> str:
    from gan_model.config import to_yaml
    return "  " + to_yaml(cfg).rstrip().replace("\n", "\n  ")


def _shutdown_ray() -> None:
    if "ray" in sys.modules:
        import ray
        if ray.is_initialized():
            ray.shutdown()


class _NoTracebackFor(logging.Filter):
    """Prefect logs a failed task with its traceback; for errors the user must fix, the
    message is the useful part (the CLI ends with it), so the traceback is dropped."""

    def __init__(self, types: tuple[type, ...]):
        super().__init__()
        self.types = types

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], self.types):
            record.exc_info, record.exc_text = None, None
        return True


def _hide_user_error_tracebacks() -> None:
    import prefect  # noqa: F401  (configures Prefect's handlers, which the filter goes on)

    from gan_model.inception import WeightsUnavailable
    from tasks.types import PipelineError, TrainingFailed

    flt = _NoTracebackFor((PipelineError, TrainingFailed, WeightsUnavailable))
    loggers = [logging.getLogger()] + [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
                                       if n.startswith("prefect")]
    for lg in loggers:
        for handler in lg.handlers:
            handler.addFilter(flt)


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ganflow", description="S3 images in, an evaluated, registered GAN out.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(sp):
        sp.add_argument("--config", help="YAML file with data/model/train/eval/registry sections")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. train.steps=500")

    def with_json(sp):
        sp.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")

    sp = sub.add_parser("run", help="the whole pipeline once")
    with_config(sp); with_json(sp); sp.set_defaults(fn=cmd_run)

    sp = sub.add_parser("ingest", help="step 1 alone: S3 prefix -> versioned data set")
    sp.add_argument("--source", help="s3://bucket/prefix (default: data.source)")
    sp.add_argument("--endpoint-url", help="S3-compatible endpoint URL")
    with_config(sp); with_json(sp); sp.set_defaults(fn=cmd_ingest)

    sp = sub.add_parser("fid", help="FID and KID between two folders of images")
    sp.add_argument("dir_a"); sp.add_argument("dir_b")
    sp.add_argument("--weights", default="auto", help="standard | auto | random | path | s3:// URI")
    sp.add_argument("--batch-size", type=_positive, default=32)
    with_json(sp); sp.set_defaults(fn=cmd_fid)

    sp = sub.add_parser("evaluate", help="FID/KID of a registered generator against its data set")
    sp.add_argument("--model", required=True, help="models:/NAME@ALIAS or models:/NAME/VERSION")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override the run's config, e.g. eval.n_generated=2048")
    with_json(sp); sp.set_defaults(fn=cmd_evaluate)

    sp = sub.add_parser("sample", help="images from a registered generator")
    sp.add_argument("--model", required=True, help="e.g. models:/ganflow-generator@champion")
    sp.add_argument("-n", type=_positive, default=64)
    sp.add_argument("--seed", type=int, default=0, help="first seed; image i uses seed+i")
    sp.add_argument("--out", required=True, help="a .png file (grid) or a folder (one PNG per image)")
    with_json(sp); sp.set_defaults(fn=cmd_sample)

    sp = sub.add_parser("promote", help="set an alias by hand (promotion or rollback)")
    sp.add_argument("name"); sp.add_argument("version")
    sp.add_argument("--alias", required=True, choices=["champion", "challenger"])
    with_json(sp); sp.set_defaults(fn=cmd_promote)

    sp = sub.add_parser("serve", help="schedule the pipeline on a Prefect server")
    sp.add_argument("--cron", required=True, help='e.g. "0 3 * * *"')
    sp.add_argument("--name", default="ganflow-nightly")
    with_config(sp); sp.set_defaults(fn=cmd_serve)

    sp = sub.add_parser("services", help="local S3 server, MLflow UI and Prefect UI for development")
    sp.add_argument("--s3-port", type=int, default=9000)
    sp.add_argument("--mlflow-port", type=int, default=5000)
    sp.add_argument("--prefect-port", type=int, default=4200)
    sp.set_defaults(fn=cmd_services)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    for noisy in ("botocore", "urllib3", "alembic", "mlflow.store.db.utils", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from flows.environment import set_local_defaults
    set_local_defaults()

    from gan_model.config import ConfigError
    from gan_model.inception import WeightsUnavailable
    from tasks.types import PipelineError, TrainingFailed

    # SIGTERM (a stopped container, `kill`) unwinds like Ctrl-C: servers and Ray are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        try:
            args.fn(args)
        finally:
            # Keep the result (or the error) the last thing printed: Prefect's
            # "stopping temporary server" notice at exit is not news.
            logging.getLogger("prefect").setLevel(logging.WARNING)
            _shutdown_ray()
    except ConfigError as err:
        print(f"ganflow: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except UserError as err:
        print(f"ganflow: error: {err}", file=sys.stderr)
        return err.code
    except (PipelineError, TrainingFailed, WeightsUnavailable) as err:
        print(f"ganflow: error: {err}", file=sys.stderr)
        return EXIT_PIPELINE
    except KeyboardInterrupt:
        _shutdown_ray()
        print("ganflow: interrupted", file=sys.stderr)
        _exit_now(130)
    except SystemExit as stop:
        if stop.code == 143:  # our SIGTERM handler
            _shutdown_ray()
            print("ganflow: terminated", file=sys.stderr)
            _exit_now(143)
        raise
    return 0


def _exit_now(code: int) -> None:
    """Exit after an interrupt without interpreter finalisation.

    The thread that ran `trainer.fit()` may still be inside Ray's C++ core when the
    interpreter tears down, which can abort the process (SIGABRT) instead of exiting with
    `code`. Cleanup registered with atexit (Prefect's temporary server, ...) still runs.
    """
    import atexit

    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
